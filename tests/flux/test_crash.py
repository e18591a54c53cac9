"""Crash safety under real Flux: Snakemake is killed with SIGKILL while its jobs
run (with look-ahead jobs queued behind them, or during group jobs) and
restarted, with and without --rerun-incomplete, in the same instance.

The instance declares 4 cores (whatever this machine has) and the runs reserve
2 of them (``--matensemble-flux-reserve-cores 2``), so 2 cores stay free: a copy
of a job that the restarted run started too early would start there at once,
beside the execution it replaces. Every job takes seconds to stop: on SIGTERM
it waits ``STOP_SECONDS`` before it ends. Every execution appends ``start`` and
either ``end`` (completed) or ``stop`` (ended on SIGTERM) lines (job name, Flux
job id, epoch time) to ``exec.log``, written by the job itself when it really
ends. The tests check that no two executions of one job overlap in time, that
every output was written by an execution that completed, that the restarted run
says what it did with each leftover, and that the outputs equal those of
Snakemake's local executor.
"""

from __future__ import annotations

import itertools
import shlex
import subprocess
from pathlib import Path

import pytest

from ..helpers import SNAKEMAKE, write_snakefile
from .fluxenv import requires_flux, run_in_flux
from .scripts import declared_resources

pytestmark = [requires_flux, pytest.mark.flux]

#: Cores of the instance, and of those the cores the runs leave to Flux alone.
CORES, RESERVED = 4, 2
#: Seconds a job takes to stop on SIGTERM.
STOP_SECONDS = 3

#: The command of every job: on SIGTERM, stop after STOP_SECONDS and log it;
#: log its start, wait for ``release``, write the output, log its end.
STAMP = "{name} ${{{{FLUX_JOB_ID:-local}}}} $(date +%s.%N) >> exec.log"
WORK = (
    f"trap 'sleep {STOP_SECONDS}; echo stop {STAMP}; exit 143' TERM; "
    f"echo start {STAMP}; "
    "while [ ! -e release ]; do sleep 0.1; done; sleep 0.3; "
    "echo {value} > {output}; "
    f"echo end {STAMP}"
)

PLAIN = f"""
rule all:
    input: expand("out/{{i}}.txt", i=range(6))

rule work:
    output: "out/{{i}}.txt"
    shell: "{WORK.format(name="work{wildcards.i}", value="{wildcards.i}", output="{output}")}"
"""

GROUPED = f"""
rule all:
    input: expand("out/b{{i}}.txt", i=range(3))

rule a:
    output: "out/a{{i}}.txt"
    group: "g"
    shell: "{WORK.format(name="a{wildcards.i}", value="a{wildcards.i}", output="{output}")}"

rule b:
    input: "out/a{{i}}.txt"
    output: "out/b{{i}}.txt"
    group: "g"
    shell: "cat {{input}} > {{output}}; echo b{{wildcards.i}} >> {{output}}"
"""

PIPED = f"""
rule all:
    input: expand("out/c{{i}}.txt", i=range(2))

rule produce:
    output: pipe("p{{i}}.pipe")
    shell: "{WORK.format(name="p{wildcards.i}", value="p{wildcards.i}", output="{output}")}"

rule consume:
    input: "p{{i}}.pipe"
    output: "out/c{{i}}.txt"
    shell: "cat {{input}} > {{output}}; echo c{{wildcards.i}} >> {{output}}"
"""


def sm(*args: str) -> str:
    return shlex.join(
        [
            *SNAKEMAKE,
            "--executor",
            "matensemble",
            "-j",
            "unlimited",
            "--matensemble-flux-reserve-cores",
            str(RESERVED),
            *args,
        ]
    )


def wait_for(condition: str, tries: int = 300) -> str:
    """Bash: wait (up to ``tries`` x 0.1 s) until ``condition`` holds."""
    return f"for i in $(seq 1 {tries}); do {condition} && break; sleep 0.1; done; "


#: Bash: ``at_kill R P`` holds once Flux runs at least R jobs and holds at least P
#: pending ones, and Snakemake's incomplete markers record the Flux id of every
#: running job (Snakemake writes them right after Flux starts the job); it
#: leaves the counts in running-at-kill.txt and pending-at-kill.txt.
AT_KILL = """at_kill() {
  local jobs running pending id
  jobs=$(flux jobs -n -o '{state} {id.f58plain}' 2>/dev/null) || return 1
  running=$(awk '$1 == "RUN" {print $2}' <<< "$jobs")
  pending=$(grep -cE '^(DEPEND|PRIORITY|SCHED) ' <<< "$jobs")
  [ $(wc -w <<< "$running") -ge $1 ] && [ $pending -ge $2 ] || return 1
  for id in $running; do
    grep -rqF -- "${id#f}" .snakemake/incomplete 2>/dev/null || return 1
  done
  wc -w <<< "$running" > running-at-kill.txt; echo $pending > pending-at-kill.txt
}; """


def kill_and_restart(
    running: int, pending: int, restart_args: tuple[str, ...], settled: str | None
) -> str:
    """Bash: start snakemake, SIGKILL it once Flux runs ``running`` of its jobs
    and holds ``pending`` more, with their ids in the markers (both 0: as soon
    as Flux has any of its jobs), restart it (after --unlock) with
    ``restart_args``, and release the jobs once the restarted run logged
    ``settled`` (a grep pattern; None: right after the kill)."""
    if running or pending:
        moment = wait_for(f"at_kill {running} {pending}")
    else:  # while it submits
        moment = wait_for("[ $(flux jobs -n -a 2>/dev/null | wc -l) -ge 1 ]", tries=3000)
    release = (
        wait_for(f"{{ grep -q {shlex.quote(settled)} second.log || ! kill -0 $pid2; }}", tries=600)
        + "touch release; "
        if settled
        else ""
    )
    return (
        AT_KILL
        + "set -m; "
        + f"{sm()} > first.log 2>&1 & pid=$!; "
        + moment
        + "kill -KILL $pid; wait $pid; "
        + ("touch release; " if not settled else "")
        + f"{shlex.join([*SNAKEMAKE, '--unlock'])} > /dev/null 2>&1; "
        + f"{sm(*restart_args)} > second.log 2>&1 & pid2=$!; "
        + release
        + "wait $pid2; echo $? > rc.txt; "
        + "flux jobs -n 2>/dev/null | wc -l > active-at-end.txt; "
        # if any, let them end (and stamp their end) before the checks
        + wait_for('[ -z "$(flux jobs -n 2>/dev/null)" ]')
    )


#: (start, end, completed) of one execution of a job
Execution = tuple[float, float, bool]


def executions(workdir: Path) -> dict[str, list[Execution]]:
    """Per job name, every execution, from the jobs' own stamps: one that was
    cancelled ends when its job logged ``stop``, after it really stopped."""
    starts: dict[tuple[str, str], float] = {}
    ends: dict[tuple[str, str], tuple[float, bool]] = {}
    for line in (workdir / "exec.log").read_text().splitlines():
        what, name, fluxid, when = line.split()
        if what == "start":
            starts[(name, fluxid)] = float(when)
        else:
            assert (name, fluxid) not in ends, f"{name} in Flux job {fluxid} ended twice"
            ends[(name, fluxid)] = (float(when), what == "end")
    found: dict[str, list[Execution]] = {}
    for (name, fluxid), start in starts.items():
        assert (name, fluxid) in ends, f"execution of {name} in Flux job {fluxid} has no end"
        end, completed = ends[(name, fluxid)]
        found.setdefault(name, []).append((start, end, completed))
    return found


def assert_never_twice_at_once(workdir: Path) -> dict[str, list[Execution]]:
    found = executions(workdir)
    for name, runs in found.items():
        runs.sort()
        for (_, end, _), (start, _, _) in itertools.pairwise(runs):
            assert start >= end, f"two executions of {name} overlapped: {runs}"
        assert runs[-1][2], f"the last execution of {name} did not complete: {runs}"
    return found


def outputs(workdir: Path) -> dict[str, str]:
    return {
        str(path.relative_to(workdir)): path.read_text()
        for path in sorted((workdir / "out").glob("*"))
    }


@pytest.fixture(scope="module")
def local_outputs(tmp_path_factory) -> dict[str, dict[str, str]]:
    """What Snakemake's local executor writes for each Snakefile."""
    found = {}
    for label, text in (("plain", PLAIN), ("grouped", GROUPED), ("piped", PIPED)):
        workdir = tmp_path_factory.mktemp(f"local-{label}")
        write_snakefile(workdir, text)
        (workdir / "release").touch()
        subprocess.run(
            [*SNAKEMAKE, "--cores", "2"],
            cwd=workdir,
            check=True,
            capture_output=True,
            timeout=120,
        )
        found[label] = outputs(workdir)
    return found


def run_crash(tmp_path: Path, snakefile: str, *, running: int, pending: int, restart_args, settled):
    write_snakefile(tmp_path, snakefile)
    script = kill_and_restart(running, pending, restart_args, settled)
    process = run_in_flux(
        ["bash", "-c", script],
        cwd=tmp_path,
        size=1,
        timeout=150,
        options=declared_resources(tmp_path, "crash0", CORES),
    )
    second = (tmp_path / "second.log").read_text()
    assert process.returncode == 0, process.stdout
    assert int((tmp_path / "rc.txt").read_text()) == 0, second
    assert int((tmp_path / "active-at-end.txt").read_text()) == 0, "Flux jobs left running"
    return second


@pytest.mark.parametrize("rerun_incomplete", [False, True])
def test_killed_with_lookahead_jobs_queued_restart_never_runs_a_job_twice_at_once(
    tmp_path, local_outputs, rerun_incomplete
):
    """6 one-core jobs on the 2 cores the runs use: 2 run and 2 wait behind them (look-ahead)
    when Snakemake is killed."""
    args = ("--rerun-incomplete",) if rerun_incomplete else ()
    settled = "ended after" if rerun_incomplete else "re-attached to Flux job"
    second = run_crash(tmp_path, PLAIN, running=2, pending=2, restart_args=args, settled=settled)
    assert int((tmp_path / "running-at-kill.txt").read_text()) == 2
    assert int((tmp_path / "pending-at-kill.txt").read_text()) == 2
    said = second.count("of the earlier run")
    assert said == 4, second
    assert second.count("DEPEND: cancelled, it was submitted ahead") == 2, second
    if rerun_incomplete:
        assert second.count(": cancelled,") == 4, second
        assert "re-attached" not in second
    else:
        assert second.count(": adopted,") == 2, second
        assert second.count("re-attached to Flux job") == 2, second
    found = assert_never_twice_at_once(tmp_path)
    ran = {name: len(runs) for name, runs in found.items()}
    assert sum(ran.values()) == (8 if rerun_incomplete else 6), ran
    assert outputs(tmp_path) == local_outputs["plain"]


@pytest.mark.parametrize("rerun_incomplete", [False, True])
def test_killed_during_group_jobs_restart_never_runs_a_job_twice_at_once(
    tmp_path, local_outputs, rerun_incomplete
):
    """3 group jobs (a then b) on the 2 cores the runs use: 2 run, 1 waits behind them."""
    args = ("--rerun-incomplete",) if rerun_incomplete else ()
    settled = "ended after" if rerun_incomplete else "re-attached to Flux job"
    second = run_crash(tmp_path, GROUPED, running=2, pending=1, restart_args=args, settled=settled)
    assert second.count("of the earlier run") == 3, second
    if not rerun_incomplete:
        assert second.count(": adopted,") == 2, second
    else:
        assert second.count(": cancelled,") == 3, second
    assert_never_twice_at_once(tmp_path)
    assert outputs(tmp_path) == local_outputs["grouped"]


def test_killed_while_submitting_restart_never_runs_a_job_twice_at_once(tmp_path, local_outputs):
    """Killed as soon as Flux has the first of its jobs; the jobs are released
    at once, so the dead run's jobs may end before, while or after the
    restarted run (--rerun-incomplete) settles them."""
    run_crash(
        tmp_path, PLAIN, running=0, pending=0, restart_args=("--rerun-incomplete",), settled=None
    )
    assert_never_twice_at_once(tmp_path)
    assert outputs(tmp_path) == local_outputs["plain"]


def test_killed_during_a_pipe_group_restart_never_runs_a_job_twice_at_once(tmp_path, local_outputs):
    """2 pipe groups of 2 cores each on the 2 cores the runs use: one runs, one waits behind it.
    The pipes and the consumer's output exist and are marked incomplete, so
    Snakemake refuses to go on without --rerun-incomplete (as after a kill of
    its local executor)."""
    second = run_crash(
        tmp_path,
        PIPED,
        running=1,
        pending=1,
        restart_args=("--rerun-incomplete",),
        settled="ended after",
    )
    assert second.count(": cancelled,") == 2, second
    assert_never_twice_at_once(tmp_path)
    assert outputs(tmp_path) == local_outputs["piped"]
