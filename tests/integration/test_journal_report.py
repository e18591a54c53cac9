"""Journal, summary figures and matensemble-report."""

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from snakemake_executor_plugin_matensemble.journal import read_journal
from snakemake_executor_plugin_matensemble.report import find_journal, main, make_report
from snakemake_executor_plugin_matensemble.summary import summarize, summary_lines

from ..helpers import run_snakemake, write_snakefile


def write_events(path: Path, events: list[dict], torn_tail: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as out:
        for event in events:
            out.write(json.dumps(event) + "\n")
        out.write(torn_tail)
    return path


def job_events(key, rule, start, end, cores, status="success", rank=0, log="x.log"):
    placement = [{"rank": rank, "cores": cores, "gpus": []}]
    events = [
        {
            "event": "queued",
            "t": 0.0,
            "key": key,
            "rule": rule,
            "wildcards": {"i": str(key)},
            "jobid": key,
            "attempt": 1,
            "request": {},
            "log": log,
        },
        {
            "event": "started",
            "t": start,
            "key": key,
            "backend_id": str(key),
            "start": start,
            "placement": placement,
        },
    ]
    if end is not None:
        kind = "finished" if status == "success" else "failed"
        events.append(
            {
                "event": kind,
                "t": end,
                "key": key,
                "status": status,
                "exit_code": 0 if status == "success" else 3,
                "reason": "r",
            }
        )
    return events


RUN = {
    "event": "run",
    "t": 0.0,
    "run": "r1",
    "backend": "local",
    "policy": "backfill",
    "nodes": [{"rank": 0, "name": "n0", "cores": [0, 1], "gpus": []}],
}


def test_summary_figures_match_a_hand_computed_case(tmp_path):
    # 2 cores: A on core 0 for 0-4 s, B on core 1 for 0-2 s, C on both for 4-6 s (fails)
    path = write_events(
        tmp_path / "journal.jsonl",
        [
            RUN,
            *job_events(1, "a", 100.0, 104.0, [0]),
            *job_events(2, "b", 100.0, 102.0, [1]),
            *job_events(3, "c", 104.0, 106.0, [0, 1], status="failed", log="c.log"),
            {"event": "end", "t": 106.5},
        ],
    )
    summary = summarize(read_journal(path))
    assert summary.makespan_s == pytest.approx(6.0)
    # core-seconds 4 + 2 + 2*2 = 10 over 2 cores x 6 s
    assert summary.core_utilization == pytest.approx(10 / 12)
    assert summary.lower_bound_s == pytest.approx(5.0)  # max(10 / 2, longest 4)
    assert summary.bound_ratio == pytest.approx(1.2)
    assert (summary.done, summary.failed) == (2, 1)
    assert [job.label for job in summary.failures] == ["c[i=3]"]
    by_rule = {s.rule: s for s in summary.rules}
    assert (by_rule["c"].cores, by_rule["c"].failures, by_rule["a"].max_s) == (2, 1, 4.0)
    lines = "\n".join(summary_lines(summary))
    assert "makespan 6.0 s" in lines
    assert "cores 83%" in lines
    assert "best possible 5.0 s" in lines
    assert "failed: c[i=3] (failed): r. Log: c.log" in lines


def test_a_killed_run_leaves_a_readable_journal(tmp_path):
    path = write_events(
        tmp_path / "journal.jsonl",
        [RUN, *job_events(1, "a", 10.0, 12.0, [0]), *job_events(2, "b", 10.0, None, [1])],
        torn_tail='{"event": "finished", "t": 13.0, "ke',
    )
    record = read_journal(path)
    running = next(job for job in record.jobs if job.key == 2)
    assert running.status == "unfinished"
    assert record.end is None
    out = make_report(path, tmp_path / "report")
    for name in ("timeline.png", "utilization.png", "rules.csv", "rules.md", "report.html"):
        assert (out / name).stat().st_size > 0


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
            "snakemake_executor_plugin_matensemble.report",
            str(tmp_path / ".snakemake/matensemble"),
        ],
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 0, cli.stderr
    report = journal.parent / "report"
    table = (report / "rules.md").read_text()
    assert "| work | 8 |" in table
    assert "| broken | 1 |" in table
    assert "data:image/png;base64," in (report / "report.html").read_text()


def test_report_cli_names_a_missing_journal(tmp_path, capsys):
    with pytest.raises(SystemExit) as caught:
        main([str(tmp_path)])
    assert caught.value.code == 2
    assert "no journal.jsonl" in capsys.readouterr().err
