"""The documented HPC path on a real (one-node) Slurm cluster:
``salloc`` -> ``srun --mpi=pmi2 ... flux start snakemake --profile ...``.

Flux learns the allocation's end from Slurm; the plugin starts only jobs that
can finish before it, prints the resume command, and the resume in a second
allocation finishes the rest without running any finished job again. Through
the images' launcher (``matensemble-flux-start``) with no Slurm client on the
PATH, the end is handed over by the environment as the docs say.
"""

from __future__ import annotations

import datetime
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..flux.fluxenv import flux_env, requires_flux
from ..helpers import write_snakefile
from ..recipes import recipe_commands

ROOT = Path(__file__).parents[2]
LAUNCHER = ROOT / "apptainer" / "flux-start.sh"
CORES = 2
SLURM_CLIENTS = {"salloc", "sbatch", "srun", "squeue", "scontrol", "sinfo", "scancel", "sacct"}

pytestmark = [pytest.mark.slurm, pytest.mark.flux, requires_flux]

ENSEMBLE = """
rule all:
    input: expand("out/{i}.txt", i=range(12))

rule work:
    output: "out/{i}.txt"
    resources: runtime=1
    shell:
        "echo start {wildcards.i} $(date +%s.%N) >> starts.log; sleep 6; "
        "echo {wildcards.i} > {output}; echo end {wildcards.i} $(date +%s.%N) >> ends.log"
"""


def user_env() -> dict[str, str]:
    """A user's shell: Flux and this Python's ``snakemake`` on PATH, the bindings found."""
    env = flux_env()
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env["PATH"]))
    return env


def in_allocation(minutes: int, step: str, cwd: Path, timeout: float = 240):
    """``salloc -N1 -t MINUTES bash -c STEP`` (STEP usually an ``srun --mpi=pmi2 ...``)."""
    return subprocess.run(
        ["salloc", "-N1", "-n1", f"-c{CORES}", "-t", str(minutes), "bash", "-c", step],
        cwd=cwd,
        env=user_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )


def documented_step(recipe: str, *extra: str) -> list[str]:
    """The commands of ``recipe`` (docs/clusters.md, README) after its ``salloc``,
    for this one-node cluster: its cores, the profile by its path in the checkout."""
    commands = recipe_commands(recipe)
    assert commands[0].startswith("salloc "), commands
    steps = [
        c.replace("<cores per node>", str(CORES)).replace(
            "--profile workflows/profiles/", f"--profile {ROOT}/workflows/profiles/"
        )
        for c in commands[1:]
    ]
    steps[-1] = " ".join([steps[-1], *extra])
    return steps


def resume_command(log: str) -> str:
    match = re.search(r"Resume in the next allocation with:\n\s+(.+)\n", log)
    assert match, log[-3000:]
    return match.group(1).strip()


def test_the_allocations_end_stops_new_jobs_and_the_resume_finishes_the_rest(
    tmp_path, slurm_cluster
):
    write_snakefile(tmp_path, ENSEMBLE)
    (step,) = documented_step("slurm", "--matensemble-deadline-margin 10")
    assert step.startswith("srun --mpi=pmi2 "), step
    assert " flux start snakemake " in step, step
    first = in_allocation(2, step, tmp_path)
    assert first.returncode != 0, first.stdout[-3000:]
    assert "the allocation ends at" in first.stdout
    done = sorted(tmp_path.glob("out/*.txt"))
    assert 0 < len(done) < 12, first.stdout[-3000:]
    starts = (tmp_path / "starts.log").read_text().splitlines()
    ends = (tmp_path / "ends.log").read_text().splitlines()
    assert len(starts) == len(ends) == len(done), "a started job was killed at the end"

    resume = resume_command(first.stdout)
    assert "--rerun-incomplete" in resume
    second = in_allocation(5, step[: step.index("snakemake ")] + resume, tmp_path)
    assert second.returncode == 0, second.stdout[-3000:]
    assert len(list(tmp_path.glob("out/*.txt"))) == 12
    started = [line.split()[1] for line in (tmp_path / "starts.log").read_text().splitlines()]
    assert sorted(started) == sorted(str(i) for i in range(12)), "a finished job ran again"


def no_slurm_path(tmp_path: Path) -> str:
    """A PATH like the images' (no Slurm client): every command of /usr/bin and
    /bin but Slurm's, then Flux and this Python."""
    bindir = tmp_path / "container-bin"
    bindir.mkdir()
    for folder in (Path("/usr/bin"), Path("/bin")):
        for tool in folder.iterdir():
            target = bindir / tool.name
            if tool.name not in SLURM_CLIENTS and not target.exists():
                target.symlink_to(tool)
    env = user_env()
    rest = [p for p in env["PATH"].split(os.pathsep) if p not in ("/usr/bin", "/bin")]
    rest = [p for p in rest if not (Path(p) / "squeue").exists()]
    return os.pathsep.join([str(bindir), *rest])


ONE_JOB = """
rule all:
    input: "one.txt"

rule one:
    output: "one.txt"
    shell: "echo one > {output}"
"""

IMAGE = "apptainer exec matensemble.sif matensemble-flux-start"


@pytest.mark.parametrize("handed_over", [True, False], ids=["end-handed-over", "no-hand-over"])
def test_the_launcher_hands_the_end_over_without_a_slurm_client(
    tmp_path, slurm_cluster, handed_over
):
    write_snakefile(tmp_path, ONE_JOB)
    inside_path = no_slurm_path(tmp_path)
    assert shutil.which("squeue", path=inside_path) is None
    # The image is this checkout's launcher with a PATH without Slurm's client.
    launcher = shlex.join(["env", f"PATH={inside_path}", "bash", str(LAUNCHER)])
    *hand_over, srun = documented_step("slurm-image")
    assert hand_over, "the slurm-image recipe hands the allocation's end over"
    assert hand_over[0].startswith("export MATENSEMBLE_JOB_END="), hand_over
    assert IMAGE in srun, srun
    srun = srun.replace(IMAGE, launcher)
    steps = [*hand_over, "echo end=$MATENSEMBLE_JOB_END", srun] if handed_over else [srun]
    run = in_allocation(3, "; ".join(steps), tmp_path, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:]
    assert (tmp_path / "one.txt").exists()
    if handed_over:
        end = int(re.search(r"end=(\d+)", run.stdout).group(1))
        assert "the allocation ends at" in run.stdout, run.stdout[-3000:]
        when = datetime.datetime.fromtimestamp(end, datetime.UTC).strftime("%Y-%m-%d %H:%M")
        assert when in run.stdout, run.stdout[-3000:]
    else:
        assert "Flux cannot learn when the allocation ends" in run.stdout
        assert "the allocation ends at" not in run.stdout
