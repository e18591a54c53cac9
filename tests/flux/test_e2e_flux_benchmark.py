"""benchmarks/e2e_flux.py at a tiny size: real snakemake --executor matensemble
against raw ``flux submit --cc`` in real brokers, with and without children:
every output exists, the journal shows where the jobs ran, and a failed run
fails the benchmark (no timing asserted)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .fluxenv import flux_env, requires_flux

pytestmark = [requires_flux, pytest.mark.flux]

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "e2e_flux.py"


def run_benchmark(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BENCHMARK), "--jobs", "12", "--brokers", "2", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**flux_env(), **env},
    )


def test_snakemake_runs_every_job_in_flux_with_and_without_children_and_prints_figures():
    out = run_benchmark("--children", "2")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "12 trivial jobs, 2 real brokers claiming 56 cores + 8 GPUs each" in out.stdout
    results = {r["path"]: r for r in json.loads(out.stdout.strip().splitlines()[-1])}
    assert list(results) == ["raw", "children off", "children 2"], out.stdout
    assert all(r["wall_s"] > 0 for r in results.values())
    # without children every job ran in the enclosing instance; with two
    # children (one node each) every job ran in a child: the enclosing
    # instance saw only the two children's own jobs
    assert results["raw"]["enclosing_jobs"] == 12, out.stdout
    assert results["children off"]["enclosing_jobs"] == 12, out.stdout
    assert results["children 2"]["enclosing_jobs"] == 2, out.stdout
    # the journal names the child each job ran in (none ran in the enclosing one)
    assert results["children off"]["per_instance"] == {"enclosing": 12}, out.stdout
    with_children = results["children 2"]["per_instance"]
    assert sum(with_children.values()) == 12, out.stdout
    assert set(with_children) <= {"c0", "c1"}, out.stdout
    assert results["children 2"]["startup_s"] > 0
    assert "every job of every run finished, every output exists" in out.stdout


def test_a_failed_snakemake_run_fails_the_benchmark_and_prints_no_rate():
    out = run_benchmark("--children", "", MATENSEMBLE_E2E_FAIL_JOB="5")
    assert out.returncode != 0, out.stdout + out.stderr
    assert "not every job finished: children off: snakemake exited 1" in out.stderr
    assert "jobs/s |" not in out.stdout
