"""Crash safety of the local backend: Snakemake is killed with SIGKILL while
its jobs run, and restarted at once (``--unlock``, then ``--rerun-incomplete``).

The killed run's jobs are slow to stop (they trap SIGTERM and take a few
seconds to clean up). The restarted run must wait until the killed run's
guard has stopped them: no two executions of one job overlap in time, and the
outputs equal those of Snakemake's local executor.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
from pathlib import Path

from ..helpers import SNAKEMAKE, interrupt_snakemake, run_snakemake, write_snakefile

SNAKEFILE = """
rule all:
    input: expand("out/{i}.txt", i=range(4))

rule slow_to_stop:
    output: "out/{i}.txt"
    shell:
        "echo start {wildcards.i} $$ $(date +%s.%N) >> exec.log; "
        "trap 'sleep 8; echo end {wildcards.i} $$ $(date +%s.%N) >> exec.log; exit 1' TERM; "
        "sleep $(cat duration) & wait $!; "
        "echo {wildcards.i} > {output}; "
        "echo end {wildcards.i} $$ $(date +%s.%N) >> exec.log"
"""


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
    (tmp_path / "duration").write_text("30")
    interrupt_snakemake(
        tmp_path,
        ready=lambda: (
            (tmp_path / "exec.log").exists()
            and len((tmp_path / "exec.log").read_text().splitlines()) >= 2
        ),
        signum=signal.SIGKILL,
        log=tmp_path / "first.log",
        delay=0.5,
    )
    (tmp_path / "duration").write_text("0.2")
    assert run_snakemake(tmp_path, "--unlock").returncode == 0
    rerun = run_snakemake(tmp_path, "--rerun-incomplete")
    assert rerun.returncode == 0, rerun.output
    assert "for the jobs of a killed run to end" in rerun.output, rerun.output
    found = executions(tmp_path)
    assert sum(len(runs) for runs in found.values()) >= 6, found
    for name, runs in found.items():
        runs.sort()
        for (_, end), (start, _) in itertools.pairwise(runs):
            assert start >= end, f"two executions of job {name} overlapped: {runs}"
    local = tmp_path / "local"
    write_snakefile(local, SNAKEFILE)
    (local / "duration").write_text("0")
    subprocess.run([*SNAKEMAKE, "--cores", "2"], cwd=local, check=True, capture_output=True)
    assert {p.name: p.read_text() for p in (tmp_path / "out").iterdir()} == {
        p.name: p.read_text() for p in (local / "out").iterdir()
    }
