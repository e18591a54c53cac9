"""The journal: what is written, how it is read back, which clock it uses."""

import json
import time

from snakemake_executor_plugin_matensemble.observing.journal import (
    Journal,
    iter_events,
    job_label,
    read_journal,
)
from snakemake_executor_plugin_matensemble.packing.allocation import Allocation
from snakemake_executor_plugin_matensemble.packing.nodes import NodeShare, NodeSpec, Placement
from snakemake_executor_plugin_matensemble.packing.resource_request import ResourceRequest

from .journal_events import RUN, job_events, write_events


def test_a_written_journal_reads_back(tmp_path):
    allocation = Allocation([NodeSpec(0, "n0", (0, 1, 2, 3), ("0",))])
    journal = Journal(tmp_path / "run")
    before = time.time()
    journal.run_started("r1", "local", "backfill", allocation)
    journal.queued(
        7,
        {"rule": "md", "wildcards": {"T": "300"}, "jobid": "3", "attempt": 2},
        ResourceRequest(tasks=2, cores_per_task=2, gpus_per_task=0, walltime_s=60),
        "logs/md.log",
    )
    placement = Placement((NodeShare(0, 2, (0, 1, 2, 3), ("0",)),))
    journal.started(7, "1234", placement, before + 1.0)
    journal.ended(7, "failed", "timeout", end=before + 5.0, exit_code=None, reason="too long")
    journal.close(plugin_cpu_s=0.5)
    after = time.time()

    record = read_journal(journal.path)
    assert record.run["backend"] == "local"
    assert (record.total_cores, record.total_gpus) == (4, 1)
    (job,) = record.jobs
    assert (job.key, job.rule, job.wildcards, job.jobid, job.attempt) == (
        7,
        "md",
        {"T": "300"},
        "3",
        2,
    )
    assert job.request["walltime_s"] == 60
    assert (job.start, job.end, job.duration()) == (before + 1.0, before + 5.0, 4.0)
    assert (job.cores, job.gpus, job.backend_id, job.log) == (4, 1, "1234", "logs/md.log")
    assert (job.status, job.failed, job.reason) == ("timeout", True, "too long")
    assert job.label == "md[T=300]"
    assert record.end["plugin_cpu_s"] == 0.5
    assert record.end["journal_events"] == 5
    # every line's t is the epoch clock, written in order
    stamps = [event["t"] for event in iter_events(journal.path)]
    assert stamps == sorted(stamps)
    assert before - 1 <= stamps[0]
    assert stamps[-1] <= after + 1


def test_runtime_comes_from_the_backend_not_from_when_the_line_was_written(tmp_path):
    # the dispatcher wrote the end line 30 s after the backend saw the job end
    path = write_events(
        tmp_path / "journal.jsonl",
        [RUN, *job_events(1, "a", 100.0, 104.0, [0], written=134.0)],
    )
    (job,) = read_journal(path).jobs
    assert job.end == 104.0
    assert job.duration() == 4.0


def test_an_end_line_without_a_backend_time_uses_its_own(tmp_path):
    journal = Journal(tmp_path)
    journal.ended(1, "cancelled", "cancelled", end=None, reason="not started")
    journal.ended(2, "finished", "success", end=0.0)
    journal.close()
    events = list(iter_events(journal.path))
    assert all("end" not in event for event in events)
    jobs = read_journal(journal.path).jobs
    assert [job.end for job in jobs] == [events[0]["t"], events[1]["t"]]
    assert not any(job.ran for job in jobs)


def test_a_killed_run_leaves_a_readable_journal(tmp_path):
    path = write_events(
        tmp_path / "journal.jsonl",
        [RUN, *job_events(1, "a", 10.0, 12.0, [0]), *job_events(2, "b", 10.0, None, [1])],
        torn_tail='{"event": "finished", "t": 13.0, "ke',
    )
    record = read_journal(path)
    running = next(job for job in record.jobs if job.key == 2)
    assert running.status == "unfinished"
    assert running.end is None
    assert running.duration(until=record.last_time) == 2.0
    assert record.end is None
    assert record.last_time == 12.0


def test_lines_written_after_close_are_dropped(tmp_path):
    journal = Journal(tmp_path)
    journal.close()
    journal.write("queued", key=1)
    assert [event["event"] for event in iter_events(journal.path)] == ["end"]


def test_attempts_of_one_snakemake_job_share_its_identity(tmp_path):
    path = write_events(
        tmp_path / "journal.jsonl",
        [
            RUN,
            *job_events(1, "a", 1.0, 2.0, [0], status="failed", jobid=5, attempt=1),
            *job_events(2, "a", 3.0, 4.0, [0], jobid=5, attempt=2),
            *job_events(3, "a", 3.0, 4.0, [1], jobid=6),
        ],
    )
    first, second, other = read_journal(path).jobs
    assert first.job == second.job != other.job


def test_job_label():
    assert job_label("md", {"T": 300, "seed": "1"}) == "md[T=300,seed=1]"
    assert job_label("all", {}) == "all"


def test_the_journal_is_one_json_object_per_line(tmp_path):
    journal = Journal(tmp_path)
    journal.write("queued", key=1, log="a\nb")
    journal.close()
    lines = journal.path.read_text().splitlines()
    assert len(lines) == 2
    assert json.loads(lines[0])["log"] == "a\nb"
