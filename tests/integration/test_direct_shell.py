"""The direct shell path gives the same results as a per-job Snakemake process.

Each Snakefile of tests/corpus runs twice in fresh directories, once with the
direct path and once with --matensemble-per-job-snakemake; output files, rule
logs, file modes, --summary and the rerun decision must be identical.
"""

import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ..helpers import run_snakemake

CORPUS = Path(__file__).parents[1] / "corpus"
PER_JOB = "--matensemble-per-job-snakemake"


def prepare(name: str, workdir: Path) -> Path:
    workdir.mkdir(parents=True)
    shutil.copy(CORPUS / f"{name}.smk", workdir / "Snakefile")
    config = CORPUS / f"{name}.config.yaml"
    if config.exists():
        shutil.copy(config, workdir / "config.yaml")
    return workdir


def products(workdir: Path) -> dict[str, tuple[bytes, int]]:
    """Every file the run made: content and permission bits."""
    found = {}
    for path in sorted(workdir.rglob("*")):
        relative = path.relative_to(workdir)
        if relative.parts[0] == ".snakemake" or relative.name in {"Snakefile", "config.yaml"}:
            continue
        if path.is_file():
            found[str(relative)] = (path.read_bytes(), stat.S_IMODE(path.stat().st_mode))
    return found


def summary(workdir: Path) -> list[tuple[str, ...]]:
    """snakemake --summary without the modification-date column."""
    output = subprocess.run(
        [sys.executable, "-m", "snakemake", "--summary", "--cores", "1"],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [line.split("\t") for line in output.splitlines() if "\t" in line]
    header = rows[0]
    keep = [i for i, column in enumerate(header) if column != "date"]
    return sorted(tuple(row[i] for i in keep) for row in rows)


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("formatting", ()),
        ("flags", ()),
        ("checkpoint", ()),
        ("retries", ("--retries", "1")),
    ],
)
def test_direct_path_is_equivalent_to_per_job_snakemake(tmp_path, name, args):
    direct = prepare(name, tmp_path / "direct")
    per_job = prepare(name, tmp_path / "per-job")
    first = run_snakemake(direct, *args)
    assert first.returncode == 0, first.output
    assert "runs its command directly" in first.output
    second = run_snakemake(per_job, *args, PER_JOB)
    assert second.returncode == 0, second.output
    # the comparison means something only if the other side took the per-job path
    assert "runs its command directly" not in second.output
    assert "runs its members' commands directly" not in second.output
    assert "the direct path is turned off (--matensemble-per-job-snakemake)" in second.output

    assert products(direct) == products(per_job)
    assert summary(direct) == summary(per_job)
    for workdir, extra in ((direct, ()), (per_job, (PER_JOB,))):
        again = run_snakemake(workdir, *args, *extra)
        assert again.returncode == 0, again.output
        assert "Nothing to be done" in again.output


def test_formatting_corpus_results(tmp_path):
    """What the formatting corpus must produce (checks the expectations themselves)."""
    workdir = prepare("formatting", tmp_path / "w")
    run = run_snakemake(workdir)
    assert run.returncode == 0, run.output
    report = (workdir / "out/b c/report.txt").read_text().splitlines()
    assert report == [
        "sample=b c label=B C factor=3",
        "listed=x 'y z'",
        "input='data/b c.txt' all='data/b c.txt' config.yaml",
        "threads=2 runtime=5 custom=spam",
        "config=hi from config global=hello from a global rule=report",
        "omp=2 mkl=2",
        "b c",
    ]
    assert (workdir / "logs/report/b c.log").read_text() == "log line for b c\n"
    (job_log,) = (workdir / ".snakemake/matensemble_logs/rule_report").glob(
        "sample=b_c-*/attempt1.log"
    )
    assert "prefix-ran" in job_log.read_text()
    assert "suffix-ran" in job_log.read_text()


def test_fallback_rules_say_why(tmp_path):
    workdir = prepare("retries", tmp_path / "w")
    run = run_snakemake(workdir, "--retries", "1")
    assert run.returncode == 0, run.output
    assert "from_run runs through a per-job Snakemake process: it has a run: block" in run.output
    assert "opted_out runs through a per-job Snakemake process: it opts out" in run.output
    assert "rule retried (shell) runs its command directly" in run.output
    assert (workdir / "retried.txt").read_text() == "attempt-runtime=20\n"


def test_flags_corpus_results(tmp_path):
    workdir = prepare("flags", tmp_path / "w")
    run = run_snakemake(workdir)
    assert run.returncode == 0, run.output
    assert not (workdir / "tmp/intermediate.txt").exists(), "temp() output was kept"
    assert (workdir / "flags/touched.flag").exists()
    assert not stat.S_IMODE((workdir / "flags/protected.txt").stat().st_mode) & 0o222
    assert (workdir / "final/first.txt").read_text() == "1.txt\n2.txt\n3.txt\n"
    assert (workdir / "pipefail/checked.txt").read_text() == "pipefail-active\n"
