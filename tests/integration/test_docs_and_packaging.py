"""Docs, packaging and release files: everything checkable without a network.
The images and the GitHub pipelines are checked in test_images.py."""

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


def test_changelog_has_the_current_version():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert f"## [{version}]" in (ROOT / "CHANGELOG.md").read_text()


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```bash\n(.*?)\n```", readme, re.DOTALL)
    test_command = next(c for c in commands if "pytest" in c)
    assert test_command in (ROOT / ".ci/run").read_text()
