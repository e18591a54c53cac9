"""Campaigns on a real (one-node) Slurm cluster, as a user runs them: one
``matensemble-submit`` each, with the ``slurm`` recipe of the flux-allocation
profile (``srun --mpi=pmi2 ... flux start snakemake ...``), allocations of 2
minutes.

These tests wait on the clock (each allocation runs for about a minute), so CI
runs them side by side: ``uv run pytest -n 7 tests/slurm/test_campaign.py``
(``.ci/run``); see ``conftest.py`` for how the default run leaves them to it.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..flux.fluxenv import in_flux, requires_flux
from ..helpers import write_snakefile
from ..recipes import campaign_command
from .test_slurm import user_env

ROOT = Path(__file__).parents[2]
SUBMIT = Path(sys.executable).parent / "matensemble-submit"
#: this cluster's tiny allocations: both cores for jobs, a short margin
SMALL = ["--matensemble-flux-reserve-cores", "0", "--matensemble-deadline-margin", "10"]

# each test waits for allocations of 2 minutes, one after another
pytestmark = [pytest.mark.flux, requires_flux, pytest.mark.timeout(1200)]

#: 6 jobs of 56 s declaring 1 minute: with a 10 s margin in a 2-minute allocation a
#: job starts only in the first 50 s, and the first round ends after that, so one
#: round (at most 2 jobs on 2 cores) runs per allocation, however fast the machine:
#: at least 3 allocations.
ENSEMBLE = """
rule all:
    input: expand("out/{i}.txt", i=range(6))

rule work:
    output: "out/{i}.txt"
    resources: runtime=1
    shell:
        "echo start {wildcards.i} $(date +%s.%N) >> starts.log; sleep 56; "
        "echo {wildcards.i} > {output}; echo end {wildcards.i} $(date +%s.%N) >> ends.log"
"""

FAILING = """
rule all:
    input: "good.txt", "bad.txt"

rule good:
    output: "good.txt"
    shell: "echo good > {output}"

rule bad:
    output: "bad.txt"
    shell: "echo failing on purpose; exit 3"
"""

TOO_LONG = """
rule all:
    input: "long.txt"

rule long:
    output: "long.txt"
    resources: runtime=5
    shell: "sleep 1; touch {output}"
"""

#: a job that runs until it is stopped (stops within a second: `sleep` ends on SIGTERM)
FOREVER = """
rule all:
    input: "forever.txt"

rule forever:
    output: "forever.txt"
    shell: "echo start forever >> starts.log; sleep 600; touch {output}"
"""


def documented(machine: str, size: str, walltime: str, *extra: str) -> list[str]:
    """The campaign command docs/allocations.md gives for ``machine``, for this
    cluster: ``size`` nodes and ``walltime`` in place of the docs' 8 nodes and 2
    hours, the profile by its path in the checkout, ``extra`` options, and
    :data:`SMALL` after the docs' Snakemake arguments."""
    argv = shlex.split(campaign_command(machine))
    assert argv[0] == "matensemble-submit", argv
    argv[0] = str(SUBMIT)
    argv[argv.index("-N") + 1] = size
    argv[argv.index("-t") + 1] = walltime
    argv[argv.index("--profile") + 1] = str(ROOT / argv[argv.index("--profile") + 1])
    at = argv.index("--")
    return [*argv[:at], *extra, *argv[at:], *SMALL]


def submit(workdir: Path, *extra: str) -> dict:
    """The docs' Slurm campaign command (``-N 1 -t 2``, ``extra`` options) in
    ``workdir``; the campaign's state."""
    done = subprocess.run(
        documented("slurm", "1", "2", *extra),
        cwd=workdir,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return state(workdir)


def campaign_dir(workdir: Path) -> Path:
    (found,) = (workdir / ".snakemake" / "matensemble" / "campaign").glob("*/state.json")
    return found.parent


def state(workdir: Path) -> dict:
    return json.loads((campaign_dir(workdir) / "state.json").read_text())


def in_queue(ids: list[str]) -> list[str]:
    """Those of ``ids`` that Slurm still has pending or running."""
    out = subprocess.run(
        ["squeue", "-h", "-o", "%i %T", "-j", ",".join(ids)], capture_output=True, text=True
    ).stdout
    return [line.split()[0] for line in out.splitlines() if line.split()[1] in _LIVE]


_LIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED"}


def wait_for(condition, timeout: float, what: str, workdir: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(2)
    pytest.fail(f"{what} within {timeout:.0f} s; state: {state(workdir)}\n{outputs(workdir)}")


def outputs(workdir: Path) -> str:
    return "\n".join(p.read_text()[-2000:] for p in sorted(campaign_dir(workdir).glob("*.out")))


def ended(workdir: Path, timeout: float) -> dict:
    """Wait until the campaign is over and none of its allocations is queued or
    running; its final state."""

    def over():
        current = state(workdir)
        ids = [a["id"] for a in current["allocations"]]
        return current if current["status"] != "active" and not in_queue(ids) else None

    return wait_for(over, timeout, "the campaign did not end", workdir)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def status_text(workdir: Path) -> str:
    done = subprocess.run(
        [str(SUBMIT), "--status"], cwd=workdir, env=user_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slurm
def test_a_workflow_needing_three_allocations_finishes_and_no_job_runs_twice(
    tmp_path, slurm_cluster
):
    write_snakefile(tmp_path, ENSEMBLE)
    submit(tmp_path, "--max-allocations", "8")
    final = ended(tmp_path, timeout=900)
    assert final["status"] == "complete", final
    ran = [a for a in final["allocations"] if a["started"]]
    assert len(ran) >= 3, final
    assert [a["reason"] for a in ran] == ["allocation_ended"] * (len(ran) - 1) + ["complete"]
    assert sorted(p.name for p in tmp_path.glob("out/*.txt")) == [f"{i}.txt" for i in range(6)]
    started = sorted(line.split()[1] for line in lines(tmp_path / "starts.log"))
    finished = sorted(line.split()[1] for line in lines(tmp_path / "ends.log"))
    assert started == finished == [str(i) for i in range(6)], "a job ran twice or was cut off"
    # nothing left queued: the allocation queued by the last one was cancelled
    assert not in_queue([a["id"] for a in final["allocations"]])
    assert all(a["state"] in ("ended", "cancelled") for a in final["allocations"]), final
    text = status_text(tmp_path)
    assert f"allocations: {len(ran)} used, 0 queued" in text, text
    assert "jobs: 6 done, 0 left" in text, text


@pytest.mark.slurm
def test_a_failing_rule_stops_the_chain_after_its_allocation(tmp_path, slurm_cluster):
    write_snakefile(tmp_path, FAILING)
    submit(tmp_path)
    final = ended(tmp_path, timeout=400)
    assert (final["status"], final["reason"]) == ("stopped", "job_failed"), final
    assert "rule bad failed" in final["message"], final
    log = final["message"].split("log: ")[1]
    assert "failing on purpose" in (tmp_path / log).read_text()
    assert len([a for a in final["allocations"] if a["started"]]) == 1, final
    assert (tmp_path / "good.txt").exists()
    assert "rule bad failed" in status_text(tmp_path)


@pytest.mark.slurm
def test_a_job_longer_than_the_walltime_stops_the_chain_without_progress(tmp_path, slurm_cluster):
    write_snakefile(tmp_path, TOO_LONG)
    submit(tmp_path)
    final = ended(tmp_path, timeout=400)
    assert (final["status"], final["reason"]) == ("stopped", "no_progress"), final
    assert "long needs a runtime of 300 s, the walltime is 120 s" in final["message"], final
    assert len([a for a in final["allocations"] if a["started"]]) == 1, final
    assert not (tmp_path / "long.txt").exists()


#: a job longer than the walltime that declares no runtime: started, cut off by the walltime
UNDECLARED = """
rule all:
    input: "long.txt"

rule long:
    output: "long.txt"
    shell: "echo start long >> starts.log; sleep 300; touch {output}"
"""


@pytest.mark.slurm
def test_a_job_cut_off_by_the_walltime_stops_the_chain_after_that_allocation(
    tmp_path, slurm_cluster
):
    write_snakefile(tmp_path, UNDECLARED)
    submit(tmp_path)
    final = ended(tmp_path, timeout=600)
    assert (final["status"], final["reason"]) == ("stopped", "no_progress"), final
    ran = [a for a in final["allocations"] if a["started"]]
    if ran[0]["reason"] == "killed":
        # Slurm's kill came before Snakemake could end: the next allocation stops at once
        assert "ran its whole walltime of 120 s" in final["message"], final
        assert [a["reason"] for a in ran] == ["killed", "no_progress"], final
    else:
        # Flux's end of the instance cut the job off first; its retry could not start
        assert "long declares no runtime and ran until the allocation's end" in final["message"]
        assert [a["reason"] for a in ran] == ["no_progress"], final
    assert lines(tmp_path / "starts.log") == ["start long"], "it ran again"


@pytest.mark.slurm
def test_cancel_stops_the_running_allocation_and_the_chain(tmp_path, slurm_cluster):
    write_snakefile(tmp_path, FOREVER)
    submit(tmp_path)
    wait_for(lambda: lines(tmp_path / "starts.log"), 600, "the job did not start", tmp_path)
    before = state(tmp_path)
    assert len(before["allocations"]) == 2, before  # the running one and the next
    cancelled = subprocess.run(
        [str(SUBMIT), "--cancel"], cwd=tmp_path, env=user_env(), capture_output=True, text=True
    )
    assert cancelled.returncode == 0, cancelled.stderr
    asked = time.monotonic()
    final = ended(tmp_path, timeout=120)
    # stopped then, not at the end of its walltime (2 minutes; the job sleeps 600 s)
    assert time.monotonic() - asked < 60, "the running allocation was not stopped"
    assert final["status"] == "cancelled", final
    assert len([a for a in final["allocations"] if a["started"]]) == 1, final
    assert final["allocations"][1]["state"] == "cancelled", final
    assert lines(tmp_path / "starts.log") == ["start forever"]
    run_end = json.loads((campaign_dir(tmp_path) / "run-end.json").read_text())
    assert run_end["reason"] == "interrupted", run_end


@pytest.mark.slurm
def test_an_allocation_killed_from_outside_is_followed_by_the_next(tmp_path, slurm_cluster):
    write_snakefile(tmp_path, ENSEMBLE)
    submit(tmp_path, "--max-allocations", "8")
    wait_for(lambda: lines(tmp_path / "starts.log"), 600, "no job started", tmp_path)
    first = state(tmp_path)["allocations"][0]["id"]
    subprocess.run(["scancel", first], check=True)
    final = ended(tmp_path, timeout=900)
    assert final["status"] == "complete", final
    allocations = final["allocations"]
    # its script never acted: the next allocation marked it killed, and went on
    assert allocations[0]["reason"] == "killed", final
    assert len([a for a in allocations if a["started"]]) >= 2, final
    finished = sorted(line.split()[1] for line in lines(tmp_path / "ends.log"))
    assert finished == [str(i) for i in range(6)], "a job finished twice or never"


#: 6 jobs of 56 s in allocations of 3 minutes (Snakemake starts later inside a
#: flux batch under load): jobs start only in the first 110 s, so at most 2 rounds of
#: 2 jobs each, so at least two allocations
FLUX_ENSEMBLE = ENSEMBLE

#: inside the "system" Flux instance: one matensemble-submit, then wait until the
#: campaign is over and nothing is pending or running
IN_FLUX = """
{submit} || exit 1
for _ in $(seq 400); do
    if ! grep -q '"status": "active"' .snakemake/matensemble/campaign/*/state.json &&
        [ -z "$(flux job list --states=pending,running)" ]; then
        echo QUEUE-EMPTY; exit 0
    fi
    sleep 2
done
"""


def test_a_campaign_chains_flux_batch_jobs_where_flux_is_the_scheduler(tmp_path):
    write_snakefile(tmp_path, FLUX_ENSEMBLE)
    script = IN_FLUX.format(submit=shlex.join(documented("flux", "1", "3m")))
    run = subprocess.run(
        in_flux(["bash", "-c", script], size=1),
        cwd=tmp_path,
        env=user_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=900,
    )
    assert "QUEUE-EMPTY" in run.stdout, run.stdout[-3000:]
    final = state(tmp_path)
    assert (final["scheduler"], final["status"]) == ("flux", "complete"), final
    ran = [a for a in final["allocations"] if a["started"]]
    assert len(ran) >= 2, final
    assert ran[-1]["reason"] == "complete", final
    finished = sorted(line.split()[1] for line in lines(tmp_path / "ends.log"))
    assert finished == [str(i) for i in range(6)], "a job ran twice or never"
