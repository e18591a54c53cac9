"""Which child Flux instance ran what, as the user sees it: the journal's start
record, the summary and ``matensemble-report`` (per-instance table, the child
of each retried or failed job), the status line and status.json."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

from snakemake_executor_plugin_matensemble.backends.base import JobFinished, JobStarted, JobStatus
from snakemake_executor_plugin_matensemble.observing.journal import (
    Journal,
    iter_events,
    read_journal,
)
from snakemake_executor_plugin_matensemble.observing.observer import child_instance_names
from snakemake_executor_plugin_matensemble.observing.report import main
from snakemake_executor_plugin_matensemble.observing.status import RunStatus, StatusReporter
from snakemake_executor_plugin_matensemble.observing.summary import InstanceStats, summarize
from snakemake_executor_plugin_matensemble.observing.summary_text import summary_lines
from snakemake_executor_plugin_matensemble.packing.nodes import NodeShare, Placement

from .journal_events import RUN, job_events, write_events
from .test_dispatcher import Listener, make
from .test_observer import FakeSnakemake, make_job, make_observer, make_ticket

TWO_NODES = {
    **RUN,
    "nodes": [
        {"rank": 0, "name": "n0", "cores": [0, 1], "gpus": []},
        {"rank": 1, "name": "n1", "cores": [0, 1], "gpus": []},
    ],
}


def in_child(events, instance):
    for event in events:
        if event["event"] == "started" and instance:
            event["instance"] = instance
    return events


def children_journal(tmp_path):
    """c0: two jobs of 1 h on one node; c1: one of 0.5 h on two nodes that
    failed, retried in c0; the enclosing instance: one of 1 h."""
    spanning = job_events(4, "big", 0.0, 3600.0, [0, 1])
    spanning[1]["placement"].append({"rank": 1, "cores": [0, 1], "gpus": []})
    lost = job_events(3, "md", 0.0, 1800.0, [0], "failed", jobid=30)
    lost[1]["placement"].append({"rank": 1, "cores": [0], "gpus": []})
    lost[-1]["reason"] = "was lost with child Flux instance c1"
    events = [
        TWO_NODES,
        *in_child(job_events(1, "md", 0.0, 3600.0, [0]), "c0"),
        *in_child(job_events(2, "md", 0.0, 3600.0, [1], rank=1), "c0"),
        *in_child(lost, "c1"),
        *in_child(job_events(5, "md", 1800.0, 3600.0, [0], jobid=30, attempt=2), "c0"),
        *spanning,
    ]
    return write_events(tmp_path / "run" / "journal.jsonl", events)


def test_the_start_record_names_the_child_and_only_then(tmp_path):
    journal = Journal(tmp_path / "run")
    placement = Placement((NodeShare(0, 1, (0,)),))
    journal.started(1, "f1", placement, 10.0, "c1")
    journal.started(2, "f2", placement, 11.0)
    journal.close()
    started = [e for e in iter_events(journal.path) if e["event"] == "started"]
    assert started[0]["instance"] == "c1"
    assert "instance" not in started[1], "the enclosing instance adds nothing to the journal"
    assert [job.instance for job in read_journal(journal.path).jobs] == ["c1", ""]


def test_summary_and_report_say_which_child_ran_what(tmp_path, capsys):
    path = children_journal(tmp_path)
    summary = summarize(read_journal(path))
    assert summary.instances == (
        InstanceStats("c0", jobs=3, failed=0, node_hours=2.5),
        InstanceStats("c1", jobs=1, failed=1, node_hours=1.0),
        InstanceStats("enclosing", jobs=1, failed=0, node_hours=2.0),
    )
    lines = summary_lines(summary)
    assert (
        "matensemble: Flux instances: c0 3 jobs (2.5000 node-h); c1 1 jobs, 1 failed "
        "(1.0000 node-h); enclosing 1 jobs (2.0000 node-h)." in lines
    )
    assert any(
        line.startswith("matensemble: retried: md[i=3] attempt 1 (failed, in child c1)")
        for line in lines
    ), lines
    assert main([str(path), "-o", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert "instances.csv" in out
    with open(tmp_path / "report" / "instances.csv") as stream:
        rows = list(csv.reader(stream))
    assert rows == [
        ["instance", "jobs", "failed", "node_hours"],
        ["c0", "3", "0", "2.5000"],
        ["c1", "1", "1", "1.0000"],
        ["enclosing", "1", "0", "2.0000"],
    ]
    page = (tmp_path / "report" / "report.html").read_text()
    assert "<h2>Flux instances</h2>" in page
    assert "attempt 1, in child c1" in page


def test_a_run_without_children_shows_no_instances(tmp_path):
    path = write_events(
        tmp_path / "run" / "journal.jsonl", [RUN, *job_events(1, "md", 0.0, 10.0, [0])]
    )
    summary = summarize(read_journal(path))
    assert summary.instances == ()
    assert not any("Flux instances" in line for line in summary_lines(summary))
    assert main([str(path), "-o", str(tmp_path / "report")]) == 0
    assert not (tmp_path / "report" / "instances.csv").exists()


def test_status_line_and_file_split_running_jobs_by_child(tmp_path):
    fields = dict(queued=0, running=3, free_cores=1, total_cores=8, free_gpus=0, total_gpus=0)
    split = RunStatus(**fields, done=0, failed=0, running_by_instance={"c0": 2, "enclosing": 1})
    assert "3 running (c0 2, enclosing 1)," in split.line()
    reporter = StatusReporter(0, str(tmp_path / "status.json"))
    reporter.write_file(split)
    assert json.loads((tmp_path / "status.json").read_text())["running_by_instance"] == {
        "c0": 2,
        "enclosing": 1,
    }
    reporter.write_file(RunStatus(**fields, done=0, failed=0))
    assert "running_by_instance" not in json.loads((tmp_path / "status.json").read_text())


def test_the_observer_counts_running_jobs_per_child(tmp_path):
    observer, journal, _ = make_observer(tmp_path, FakeSnakemake())
    assert observer.current_status().running_by_instance is None, "no children: no split"
    children = [SimpleNamespace(name="c0"), SimpleNamespace(name="c1")]
    backend = SimpleNamespace(children=SimpleNamespace(children=children))
    observer.instances = child_instance_names(backend)  # what the Observer reads at start
    assert observer.instances == ("c0", "c1", "enclosing")
    tickets = [make_ticket(k, make_job(k), tmp_path) for k in (1, 2, 3)]
    for ticket, instance in zip(tickets, ("c1", "c1", ""), strict=True):
        ticket.placement = Placement((NodeShare(0, 1, (0,)),))
        observer.queued(ticket)
        observer.on_started(ticket, f"f{ticket.key}", 1.0, instance)
    assert observer.current_status().running_by_instance == {"c0": 0, "c1": 2, "enclosing": 1}
    observer.on_finished(tickets[0], JobFinished(1, JobStatus.SUCCESS, "exited", exit_code=0))
    assert observer.current_status().running_by_instance == {"c0": 0, "c1": 1, "enclosing": 1}
    observer.reports.close()
    assert [job.instance for job in read_journal(journal.path).jobs] == ["c1", "c1", ""]


class ChildListener(Listener):
    def __init__(self):
        super().__init__()
        self.instances = {}

    def on_started(self, ticket, backend_id, time, instance=""):
        super().on_started(ticket, backend_id, time)
        self.instances[ticket.key] = instance


def test_the_dispatcher_hands_the_child_on():
    dispatcher, _, listener = make(listener=ChildListener())
    for key, instance in ((1, "c1"), (2, "")):
        dispatcher._tickets[key] = SimpleNamespace(key=key)
        dispatcher._handle(JobStarted(key, f"f{key}", 1.0, instance=instance))
    assert listener.instances == {1: "c1", 2: ""}
