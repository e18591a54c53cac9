"""Journal, summary and matensemble-report of real snakemake runs (the pure journal,
summary and report tests are in tests/unit)."""

import itertools
import json
import subprocess
import sys

from snakemake_executor_plugin_matensemble.observing.journal import read_journal
from snakemake_executor_plugin_matensemble.observing.report import find_journal, make_report

from ..helpers import run_snakemake, write_snakefile


def test_report_of_a_real_run(tmp_path):
    write_snakefile(
        tmp_path,
        """
        rule all:
            input: expand("out/{i}.txt", i=range(8)), "broken.txt"

        rule work:
            output: "out/{i}.txt"
            threads: lambda wc: 1 + int(wc.i) % 2
            shell: "sleep 0.3; touch {output}"

        rule broken:
            output: "broken.txt"
            shell: "exit 4"
        """,
    )
    run = run_snakemake(tmp_path, "--keep-going", "--matensemble-status-file", "status.json")
    assert run.returncode != 0
    assert "matensemble: 8 job(s) done, 1 failed" in run.output
    assert "utilization: cores" in run.output
    assert "failed: broken (failed): exited with code 4" in run.output
    status = json.loads((tmp_path / "status.json").read_text())
    assert (status["done"], status["failed"], status["running"]) == (8, 1, 0)

    journal = find_journal(tmp_path / ".snakemake/matensemble")
    record = read_journal(journal)
    assert len(record.jobs) == 9
    assert all(job.ran and job.end is not None for job in record.jobs)
    # one clock: start and end (the backend's) and t (when written) are all epoch
    # seconds, within the run
    run_started = record.run["t"]
    for job in record.jobs:
        assert run_started <= job.queued <= job.start <= job.end <= record.last_time, job
    # lanes never overlap on a core
    per_core: dict[tuple, list] = {}
    for job in record.jobs:
        for share in job.placement:
            for core in share["cores"]:
                per_core.setdefault((share["rank"], core), []).append((job.start, job.end))
    for intervals in per_core.values():
        intervals.sort()
        for (_, end), (start, _) in itertools.pairwise(intervals):
            assert start >= end - 1e-6

    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake_executor_plugin_matensemble.observing.report",
            str(tmp_path / ".snakemake/matensemble"),
        ],
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 0, cli.stderr
    report = journal.parent / "report"
    table = (report / "rules.md").read_text()
    assert "| work | 8 | 8 |" in table
    assert "| broken | 1 | 1 |" in table
    assert "data:image/png;base64," in (report / "report.html").read_text()


def test_a_job_that_succeeds_on_retry_is_not_counted_as_failed(tmp_path):
    write_snakefile(
        tmp_path,
        """
        rule all:
            input: "flaky.txt", "steady.txt"

        rule flaky:
            output: "flaky.txt"
            shell: "if [ -e tried ]; then touch {output}; else touch tried; exit 3; fi"

        rule steady:
            output: "steady.txt"
            shell: "touch {output}"
        """,
    )
    run = run_snakemake(tmp_path, "--retries", "1")
    assert run.returncode == 0, run.output
    assert (
        "matensemble: 2 job(s) done, 0 failed, 0 cancelled, 0 not started "
        "(3 attempts; 1 failed and were retried)."
    ) in run.output
    assert "matensemble: retried: flaky attempt 1 (failed): exited with code 3." in run.output
    assert "matensemble: failed:" not in run.output
    record = read_journal(find_journal(tmp_path / ".snakemake/matensemble"))
    flaky = [job for job in record.jobs if job.rule == "flaky"]
    assert [(job.attempt, job.status) for job in flaky] == [(1, "failed"), (2, "success")]
    assert flaky[0].jobid == flaky[1].jobid
    report = make_report(find_journal(tmp_path / ".snakemake/matensemble"))
    assert "| flaky | 1 | 2 |" in (report / "rules.md").read_text()
