"""Docs, images, pipelines and release files: everything checkable without a
container runtime or a network."""

import dataclasses
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from snakemake_executor_plugin_matensemble.settings import ExecutorSettings

ROOT = Path(__file__).parents[2]
FLAGS = {"--matensemble-" + f.name.replace("_", "-") for f in dataclasses.fields(ExecutorSettings)}
DEFINITIONS = sorted((ROOT / "apptainer").glob("*.def"))


def versions() -> dict[str, str]:
    pairs = {}
    for line in (ROOT / "apptainer/versions.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, value = line.split("=", 1)
            pairs[key.strip()] = value.strip()
    return pairs


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    return out


def test_docs_build_strict_and_settings_page_lists_every_setting(site):
    page = (site / "settings/index.html").read_text()
    missing = [flag for flag in sorted(FLAGS) if flag not in page]
    assert not missing, f"settings page lacks {missing}"
    assert (site / "img/policies.png").stat().st_size > 10_000


def documented_flags() -> dict[str, set[str]]:
    files = [ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("workflows/**/README.md")]
    files += list(ROOT.glob("apptainer/*"))
    found = {}
    for path in files:
        if path.is_file():
            found[str(path.relative_to(ROOT))] = set(
                re.findall(r"--matensemble-[a-z-]+", path.read_text())
            )
    for profile in ROOT.glob("workflows/profiles/*/config.yaml"):
        keys = re.findall(r"^(matensemble-[a-z-]+):", profile.read_text(), re.MULTILINE)
        found[str(profile.relative_to(ROOT))] = {f"--{key}" for key in keys}
    return found


def test_every_flag_in_docs_readmes_and_profiles_is_a_real_setting():
    unknown = {
        path: sorted(flags - FLAGS) for path, flags in documented_flags().items() if flags - FLAGS
    }
    assert not unknown, unknown
    used = set().union(*documented_flags().values())
    assert used & FLAGS, "no flag found at all: the scan is broken"


def test_plugin_catalog_pages_exist():
    assert (ROOT / "docs/intro.md").read_text().strip()
    assert (ROOT / "docs/further.md").read_text().startswith("# Further details")


REQUIRED_SECTIONS = ["%labels", "%help", "%files", "%post", "%environment", "%runscript", "%test"]


@pytest.mark.parametrize("definition", DEFINITIONS, ids=lambda p: p.stem)
def test_apptainer_definition_is_complete_and_pinned(definition):
    text = definition.read_text()
    header = dict(re.findall(r"^(Bootstrap|From):\s*(\S+)", text, re.MULTILINE))
    assert header.get("Bootstrap") == "docker"
    image, _, tag = header["From"].rpartition(":")
    assert image, header["From"]
    assert tag not in ("", "latest"), f"base image not pinned: {header['From']}"
    for section in REQUIRED_SECTIONS:
        assert re.search(rf"^{section}\b", text, re.MULTILINE), f"{definition.name} lacks {section}"
    pinned = versions()
    used = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", text))
    assert used <= set(pinned), f"undefined build args {used - set(pinned)}"
    assert {"FLUX_CORE_VERSION", "FLUX_SCHED_VERSION"} <= used
    for line in (
        re.search(r"^%files\n(.*?)(?=^%)", text, re.MULTILINE | re.DOTALL).group(1).splitlines()
    ):
        if line.strip():
            source = line.split()[0]
            assert (ROOT / source).exists(), f"{definition.name}: %files source {source} missing"
    assert "flux start snakemake" in text
    assert "--matensemble-backend" in text or "--executor matensemble" in text


def test_versions_are_exact_releases():
    for key, value in versions().items():
        assert re.fullmatch(r"\d+\.\d+(\.\d+)?", value), f"{key}={value} is not an exact version"


def test_github_workflows_are_valid():
    workflows = sorted(str(p) for p in (ROOT / ".github/workflows").glob("*.yml"))
    assert len(workflows) >= 4
    check = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.github-workflows",
            *workflows,
        ],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    tests = (ROOT / ".github/workflows/tests.yml").read_text()
    assert "bash .ci/run" in tests
    release = (ROOT / ".github/workflows/release.yml").read_text()
    assert "uv build" in release
    assert "uv publish" in release
    images = (ROOT / ".github/workflows/images.yml").read_text()
    assert "[baseline, frontier, perlmutter]" in images


def test_changelog_has_the_current_version():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert f"## [{version}]" in (ROOT / "CHANGELOG.md").read_text()


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```bash\n(.*?)\n```", readme, re.DOTALL)
    test_command = next(c for c in commands if "pytest" in c)
    assert test_command in (ROOT / ".ci/run").read_text()
