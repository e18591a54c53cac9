"""benchmarks/full_machine.py --flux --children at a tiny size, in real Flux:
the plugin runs its jobs through separately started child instances attached
through the carrier, every job of every mode ends, jobs really ran in the
children, and a crashed plugin run fails the benchmark (no timing asserted)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from .fluxenv import flux_env, requires_flux

pytestmark = [requires_flux, pytest.mark.flux, pytest.mark.snakemake_independent]

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "full_machine.py"
ROW = re.compile(
    r"^\| (\d) \| \w+ \| (\d+) \| (\d+) \| (\d+) \| [0-9.]+x \| [0-9.]+x "
    r"\| ([0-9 /]+) \((\d+)\) \| [0-9.]+ / [0-9.]+ \| \d+ \|$",
    re.MULTILINE,
)


def run_benchmark(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BENCHMARK), "--nodes", "8", "--scheduler", "simple", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**flux_env(), **env},
    )


def test_the_plugin_runs_every_job_through_attached_children_and_prints_its_figures():
    out = run_benchmark("--flux", "40", "--rounds", "1", "--children", "2")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "8 fake nodes, 2 child instance(s) of about 4 fake nodes, 40 jobs" in out.stdout
    rows = ROW.findall(out.stdout)
    assert [row[0] for row in rows] == ["1"], out.stdout
    (_, children, single, raw, per_child, enclosing) = rows[0]
    assert min(int(children), int(single), int(raw)) > 0
    # every job ran once, in a child or (over two children) in the enclosing
    # instance, and the children really ran jobs
    counts = [int(n) for n in per_child.split(" / ")]
    assert len(counts) == 2, out.stdout
    assert sum(counts) > 0, out.stdout
    assert sum(counts) + int(enclosing) == 40, out.stdout
    assert "every job of every mode finished" in out.stdout


def test_a_crashed_plugin_run_with_children_fails_the_benchmark_and_prints_no_rate():
    # the children's plugin run raises at its 11th launch: 29 jobs never run
    out = run_benchmark(
        "--flux", "40", "--rounds", "1", "--children", "2", MATENSEMBLE_BENCH_FAIL_AT_LAUNCH="11"
    )
    assert out.returncode != 0, out.stdout + out.stderr
    assert "not every job finished: plugin_children:" in out.stdout + out.stderr
    assert "jobs/s" not in out.stdout
