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


def test_the_real_flux_benchmark_runs_small_and_prints_its_figures():
    out = subprocess.run(
        [sys.executable, str(BENCHMARK), "--nodes", "8", "--flux", "40", "--rounds", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        env=flux_env(),
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "real Flux, 8 fake nodes, 40 jobs in test execution, 2 round(s):" in out.stdout
    rows = re.findall(
        r"^\| (\d) \| (\d+) \| (\d+) \| (\d+) \| ([0-9.]+)x \| [0-9.]+ \| (\d+) \|$",
        out.stdout,
        re.MULTILINE,
    )
    assert [row[0] for row in rows] == ["1", "2"], out.stdout
    for _, plugin, raw, executor, _ratio, failed in rows:
        assert min(int(plugin), int(raw), int(executor)) > 0
        assert failed == "0"  # every job the plugin submitted ran
    assert re.search(r"median plugin / raw: [0-9.]+x", out.stdout)
