"""Crash safety of the local backend: Snakemake is killed with SIGKILL while
its jobs run, and restarted at once (``--unlock``, then ``--rerun-incomplete``).

The killed run's jobs are slow to stop: on SIGTERM they trap and keep cleaning
up until the test lets them end (a file appears), and the killed run's grace
before SIGKILL is long enough never to cut that short. The restarted run must
wait until the killed run's guard has seen them end: while it waits they are
still running and it has started nothing; no two executions of one job overlap
in time, and the outputs equal those of Snakemake's local executor. Every wait
is on a condition, none on a margin of seconds.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
from pathlib import Path

from ..helpers import SNAKEMAKE, run_snakemake, start_snakemake, wait_until, write_snakefile

SNAKEFILE = """
rule all:
    input: expand("out/{i}.txt", i=range(4))

rule slow_to_stop:
    output: "out/{i}.txt"
    shell:
        "trap 'until [ -e release ]; do sleep 0.05; done; "
        "echo end {wildcards.i} $$ $(date +%s.%N) >> exec.log; exit 1' TERM; "
        "echo start {wildcards.i} $$ $(date +%s.%N) >> exec.log; "
        "sleep $(cat duration) & wait $!; "
        "echo {wildcards.i} > {output}; "
        "echo end {wildcards.i} $$ $(date +%s.%N) >> exec.log"
"""

#: the SIGTERM-to-SIGKILL grace of both runs (the rerun waits for a killed run's
#: guard up to its own grace + 30 s): far beyond the test's own waits
GRACE_S = "600"
#: how long the killed run's jobs keep cleaning up once the rerun says it waits
#: for them: the rerun must start nothing meanwhile. Correct code passes with any
#: hold; a longer one only gives a rerun that does not wait more time to show it.
HOLD_S = 3.0


def stamps(workdir: Path, what: str) -> set[tuple[str, str]]:
    """The (job, pid) of every ``what`` ("start" or "end") line so far."""
    log = workdir / "exec.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return {(name, pid) for kind, name, pid, _ in map(str.split, lines) if kind == what}


def executions(workdir: Path) -> dict[str, list[tuple[float, float]]]:
    starts: dict[tuple[str, str], float] = {}
    ends: dict[tuple[str, str], float] = {}
    for line in (workdir / "exec.log").read_text().splitlines():
        what, name, pid, when = line.split()
        (starts if what == "start" else ends)[(name, pid)] = float(when)
    found: dict[str, list[tuple[float, float]]] = {}
    for key, start in starts.items():
        assert key in ends, f"execution {key} never ended (killed without its cleanup)"
        found.setdefault(key[0], []).append((start, ends[key]))
    return found


def test_killed_snakemake_jobs_end_before_the_restarted_run_starts_them(tmp_path):
    write_snakefile(tmp_path, SNAKEFILE)
    (tmp_path / "duration").write_text("600")
    first = start_snakemake(
        tmp_path,
        "--matensemble-kill-grace-seconds",
        GRACE_S,
        "--matensemble-local-cores",
        "2",
        log=tmp_path / "first.log",
    )
    rerun = None
    try:
        # both cores busy, each job with its TERM trap set (its start line comes after)
        assert wait_until(lambda: len(stamps(tmp_path, "start")) >= 2, 120), (
            tmp_path / "first.log"
        ).read_text()
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=60)
        killed = stamps(tmp_path, "start")
        (tmp_path / "duration").write_text("0.2")
        assert run_snakemake(tmp_path, "--unlock").returncode == 0
        rerun = start_snakemake(
            tmp_path,
            "--rerun-incomplete",
            "--matensemble-kill-grace-seconds",
            GRACE_S,
            log=tmp_path / "rerun.log",
        )
        rerun_log = tmp_path / "rerun.log"
        waiting = "was killed; waiting until its guard has stopped its jobs"
        assert wait_until(
            lambda: (
                waiting in rerun_log.read_text()
                or stamps(tmp_path, "start") != killed
                or rerun.poll() is not None
            ),
            120,
        ), rerun_log.read_text()
        assert waiting in rerun_log.read_text(), rerun_log.read_text()
        # the killed run's jobs still clean up, and the rerun starts none of its own
        started_early = wait_until(
            lambda: stamps(tmp_path, "start") != killed or rerun.poll() is not None, HOLD_S
        )
        assert not started_early, (tmp_path / "exec.log").read_text()
        assert stamps(tmp_path, "end") == set(), (tmp_path / "exec.log").read_text()
        (tmp_path / "release").touch()
        assert rerun.wait(timeout=240) == 0, rerun_log.read_text()
    finally:
        (tmp_path / "release").touch()  # let trapped jobs end whatever happened
        for process in (first, rerun):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
    found = executions(tmp_path)
    assert sum(len(runs) for runs in found.values()) >= 6, found
    for name, runs in found.items():
        runs.sort()
        for (_, end), (start, _) in itertools.pairwise(runs):
            assert start >= end, f"two executions of job {name} overlapped: {runs}"
    assert "for the jobs of a killed run to end" in (tmp_path / "rerun.log").read_text()
    local = tmp_path / "local"
    write_snakefile(local, SNAKEFILE)
    (local / "duration").write_text("0")
    subprocess.run([*SNAKEMAKE, "--cores", "2"], cwd=local, check=True, capture_output=True)
    assert {p.name: p.read_text() for p in (tmp_path / "out").iterdir()} == {
        p.name: p.read_text() for p in (local / "out").iterdir()
    }
