"""Docs, packaging and release files: everything checkable without a network.
The images and the GitHub pipelines are checked in test_images.py."""

import dataclasses
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from snakemake_executor_plugin_matensemble.settings import ExecutorSettings

from ..recipes import RECIPES, markdown_files, profiles, recipes

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


@pytest.mark.snakemake_independent
def test_readme_settings_table_lists_every_setting_with_the_codes_default():
    readme = (ROOT / "README.md").read_text()
    rows = dict(re.findall(r"^\| `(--matensemble-[a-z-]+)` \| ([^|]*) \|", readme, re.MULTILINE))
    assert set(rows) == FLAGS
    for field in dataclasses.fields(ExecutorSettings):
        flag = "--matensemble-" + field.name.replace("_", "-")
        cell = rows[flag].replace("`", "").strip()
        assert cell, f"README: {flag} has no default"
        assert field.metadata["default_text"].startswith(cell), f"README: {flag} default {cell!r}"


# -- one launch recipe per machine -----------------------------------------------------


@pytest.mark.snakemake_independent
def test_each_machine_has_one_recipe_the_same_everywhere():
    found = recipes()
    assert set(found) == set(RECIPES), f"recipes: {sorted(found)}"
    for name, required in RECIPES.items():
        missing = set(required) - set(found[name])
        assert not missing, f"recipe {name} missing from {sorted(missing)}"
        texts = set(found[name].values())
        assert len(texts) == 1, f"recipe {name} differs between {sorted(found[name])}: {texts}"


def shell_blocks(text: str) -> list[str]:
    """The shell (```bash, ```sh or unlabelled) fenced blocks of a markdown text."""
    blocks: list[tuple[str, list[str]]] = []
    inside = False
    for line in text.splitlines():
        if line.startswith("```"):
            if not inside:
                blocks.append((line.strip("`").strip(), []))
            inside = not inside
        elif inside:
            blocks[-1][1].append(line)
    return ["\n".join(lines) for language, lines in blocks if language in ("", "bash", "sh")]


def code_lines() -> list[tuple[str, str]]:
    """Every line of a shell code block in the docs and every command in the
    profiles' comments, joined across trailing backslashes."""
    lines = []
    for path in markdown_files():
        for block in shell_blocks(path.read_text()):
            lines += [(str(path), line) for line in block.replace("\\\n", " ").splitlines()]
    for path in profiles().values():
        # commands in a profile's comments are indented: '#   srun ...'
        comments = [line[4:] for line in path.read_text().splitlines() if line.startswith("#   ")]
        text = "\n".join(comments).replace("\\\n", " ")
        lines += [(str(path), line) for line in text.splitlines()]
    return lines


@pytest.mark.snakemake_independent
def test_every_srun_that_starts_flux_uses_pmi2_and_one_broker_per_node():
    sruns = [(path, line) for path, line in code_lines() if re.search(r"\bsrun\b", line)]
    assert len(sruns) >= 10, "the scan found too few srun lines: it is broken"
    for path, line in sruns:
        for part in ("srun --mpi=pmi2 -N $SLURM_NNODES --ntasks-per-node=1 -c ", "flux-start"):
            if part == "flux-start" and "apptainer" not in line:
                continue  # a host Flux: plain flux start
            assert part in line, f"{path}: {line.strip()!r} lacks {part!r}"


@pytest.mark.snakemake_independent
def test_gpu_recipes_start_flux_with_the_gpus_declared_and_name_the_right_variable():
    found = recipes()
    for name in ("frontier", "perlmutter"):
        (text,) = set(found[name].values())
        assert "matensemble-flux-start" in text
        assert "flux start" not in text, f"{name}: plain flux start, Flux would see no GPU"
        assert f"--profile workflows/profiles/{name} " in text
    # Flux's gpu-affinity (which the plugin sets on every GPU job) sets
    # CUDA_VISIBLE_DEVICES only, on AMD GPUs too (HIP honours it)
    from snakemake_executor_plugin_matensemble.backends.flux import jobspec

    assert '"gpu-affinity", "per-task"' in Path(jobspec.__file__).read_text()
    for profile in ("frontier", "perlmutter"):
        comments = profiles()[profile].read_text()
        assert "CUDA_VISIBLE_DEVICES" in comments
        assert "ROCR_VISIBLE_DEVICES" not in comments
    frontier = (ROOT / "docs/clusters.md").read_text().split("## Frontier")[1].split("\n## ")[0]
    assert "CUDA_VISIBLE_DEVICES" in frontier
    for sentence in re.split(r"\.\s", " ".join(frontier.split())):
        if "ROCR_VISIBLE_DEVICES" in sentence:
            assert "local backend" in sentence, sentence


def profile_settings(path: Path) -> ExecutorSettings:
    import yaml

    keys = {
        key.removeprefix("matensemble-").replace("-", "_"): value
        for key, value in yaml.safe_load(path.read_text()).items()
        if key.startswith("matensemble-")
    }
    return ExecutorSettings(**keys)


@pytest.mark.parametrize("profile", sorted(profiles()))
def test_shipped_profiles_settings_are_accepted_by_the_plugin(profile):
    from snakemake_executor_plugin_matensemble.backends.flux.options import FluxOptions

    settings = profile_settings(profiles()[profile])
    settings.check()
    FluxOptions.from_settings(settings)  # refuses shell options the plugin manages


# -- installing, and the quickstart's laptop example ----------------------------------


@pytest.mark.snakemake_independent
def test_install_from_the_repository_is_given_beside_the_pypi_name():
    repository = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"][
        "Repository"
    ]
    blocks = set()
    for page in ("README.md", "docs/quickstart.md"):
        (block,) = re.findall(
            r"<!-- install -->\n```bash\n(.*?)\n```", (ROOT / page).read_text(), re.DOTALL
        )
        blocks.add(block)
    (block,) = blocks  # the same in both
    assert f"pip install git+{repository}" in block
    assert "uv sync" in block
    assert "pip install snakemake-executor-plugin-matensemble" in block


def test_quickstart_laptop_example_runs_as_written(tmp_path):
    page = (ROOT / "docs/quickstart.md").read_text()
    (snakefile,) = re.findall(
        r"<!-- quickstart: Snakefile -->\n```python\n(.*?)```", page, re.DOTALL
    )
    (command,) = re.findall(r"<!-- quickstart: run -->\n```bash\n(.*?)\n```", page, re.DOTALL)
    assert command.split()[:1] == ["snakemake"]
    (tmp_path / "Snakefile").write_text(snakefile)
    env = {k: v for k, v in os.environ.items() if k != "FLUX_URI"}  # a laptop: no Flux
    run = subprocess.run(
        [sys.executable, "-m", *command.split()],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = (tmp_path / "energies.txt").read_text().splitlines()
    assert lines == [f"T={t} E=-{3000 + t // 100}" for t in (300, 600, 900, 1200)]
