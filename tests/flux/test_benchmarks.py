"""benchmarks/full_machine.py --flux at a tiny size, in a real Flux instance:
it runs, every job of every mode ends, and it prints its figures (no timing is
asserted)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from .fluxenv import flux_env, requires_flux

pytestmark = [requires_flux, pytest.mark.flux, pytest.mark.snakemake_independent]

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "full_machine.py"


def run_benchmark(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BENCHMARK), "--nodes", "8", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**flux_env(), **env},
    )


def test_the_real_flux_benchmark_runs_small_and_prints_its_figures():
    out = run_benchmark("--flux", "40", "--rounds", "2")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "real Flux (fluxion), 8 fake nodes, 40 jobs in test execution, 2 round(s):" in out.stdout
    rows = re.findall(
        r"^\| (\d) \| (\d+) \| (\d+) \| (\d+) \| (\d+) \| [0-9.]+x \| [0-9.]+x \| [0-9.]+ "
        r"\| [0-9.]+-[0-9.]+ \|$",
        out.stdout,
        re.MULTILINE,
    )
    assert [row[0] for row in rows] == ["1", "2"], out.stdout
    for _, plugin, scheduled, raw, executor in rows:
        assert min(int(plugin), int(scheduled), int(raw), int(executor)) > 0
    assert "every job of every mode finished" in out.stdout


def test_a_crashed_plugin_run_fails_the_benchmark_and_prints_no_rate():
    # the plugin's backend raises at its 11th launch: the dispatcher crashes
    # with 29 jobs never run; the benchmark must say so and exit non-zero
    out = run_benchmark("--flux", "40", "--rounds", "1", MATENSEMBLE_BENCH_FAIL_AT_LAUNCH="11")
    assert out.returncode != 0, out.stdout + out.stderr
    assert "not every job finished: plugin:" in out.stdout + out.stderr
    assert "jobs/s" not in out.stdout
