"""benchmarks/full_machine.py at a tiny size: it runs, every job finishes, and it
prints its figures (no timing is asserted)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "full_machine.py"


@pytest.mark.snakemake_independent
def test_the_full_machine_benchmark_runs_small_and_prints_its_figures():
    out = subprocess.run(
        [sys.executable, str(BENCHMARK), "--nodes", "50", "--jobs", "500", "--small-jobs", "100"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    rows = [line for line in out.splitlines() if re.match(r"\| 50 \| (100|500) \|", line)]
    assert len(rows) == 2, out
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert float(cells[4].replace(",", "")) > 0  # jobs per CPU second
        ratio = float(re.search(r"= ([0-9.]+)x", cells[7]).group(1))
        assert ratio >= 1.0  # never below the lower bound
    assert "100 jobs on 50 nodes -> 500 on 50: plugin CPU per job x" in out
    assert re.search(r"exclusive: [0-9.]+", out), out


def test_the_simulated_run_respects_the_lower_bound_and_places_every_job():
    sys.path.insert(0, str(BENCHMARK.parent))
    try:
        import full_machine
    finally:
        sys.path.remove(str(BENCHMARK.parent))
    run = full_machine.simulate(nodes=4, jobs=60, seed=1, reserve_after=60.0)
    assert run.finished == 60  # every job finished
    assert run.launched == 60  # each launched once, never again
    assert run.makespan_s >= run.lower_bound_s
    assert 0 < run.busy_while_queued <= 1.0
