"""The observer with a fake Snakemake: outcomes reported in order from their own
thread, journal verdicts, withdrawn reasons, halting after a failure."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from snakemake_executor_plugin_matensemble.backends.base import JobFinished, JobStatus
from snakemake_executor_plugin_matensemble.intake.command import CommandPath, JobCommand
from snakemake_executor_plugin_matensemble.intake.intake import Submission
from snakemake_executor_plugin_matensemble.observing.journal import (
    Journal,
    iter_events,
    read_journal,
)
from snakemake_executor_plugin_matensemble.observing.observer import Observer, Reports
from snakemake_executor_plugin_matensemble.observing.status import StatusReporter
from snakemake_executor_plugin_matensemble.packing.allocation import Allocation
from snakemake_executor_plugin_matensemble.packing.nodes import NodeSpec
from snakemake_executor_plugin_matensemble.packing.packer import Packer
from snakemake_executor_plugin_matensemble.packing.policies import BackfillPolicy
from snakemake_executor_plugin_matensemble.packing.queue import JobTicket
from snakemake_executor_plugin_matensemble.packing.resource_request import ResourceRequest
from snakemake_executor_plugin_matensemble.snakemake_boundary import JobRecord


class FakeSnakemake:
    """Records what the plugin reports, and from which thread."""

    def __init__(self, keep_going=False):
        self.calls: list[tuple[str, int, str]] = []
        self.keep_going_flag = keep_going
        self.not_started: list[int] = []

    def report_job_success(self, job_info):
        self.calls.append(("success", job_info.job.jobid, threading.current_thread().name))

    def report_job_error(self, job_info, msg=None, **kwargs):
        self.calls.append(("error", job_info.job.jobid, msg))

    # the boundary's part
    def keep_going(self):
        return self.keep_going_flag

    def job_not_started(self, record):
        self.not_started.append(record.job.jobid)

    def register_external_jobid(self, record, backend_id):
        pass


def make_job(jobid, restart_times=0, attempt=1):
    """The record of job ``jobid`` (Snakemake's job: its id only, for the reports)."""
    return JobRecord(
        SimpleNamespace(jobid=jobid),
        str(jobid),
        "r",
        attempt,
        {"i": str(jobid)},
        rules=("r",),
        restart_times=restart_times,
    )


def make_ticket(key, job, tmp_path):
    cleanup = tmp_path / f"script{key}.py"
    cleanup.write_text("")
    submission = Submission(
        record=job,
        job_info=SimpleNamespace(job=job.job, external_jobid=None),
        command=JobCommand("true", path=CommandPath.DIRECT, cleanup=(str(cleanup),)),
        name=f"r[i={job.jobid}]",
        log_path=f"logs/{key}.log",
    )
    return JobTicket(key=key, request=ResourceRequest(), payload=submission)


def make_observer(tmp_path, snakemake):
    allocation = Allocation([NodeSpec(0, "n0", (0, 1), ())])
    journal = Journal(tmp_path / "run")
    halted = []
    observer = Observer(
        snakemake,
        snakemake,
        journal,
        StatusReporter(0, None),
        Packer(allocation, BackfillPolicy()),
        allocation,
        SimpleNamespace(name="local", can_attach=False),
    )
    finished = observer.on_finished

    def on_finished(ticket, result):  # what the dispatcher is told: halt or not
        halt = finished(ticket, result)
        if halt:
            halted.append(True)
        return halt

    observer.on_finished = on_finished
    return observer, journal, halted


def finish(observer, ticket, status=JobStatus.SUCCESS, code=0):
    return observer.on_finished(ticket, JobFinished(ticket.key, status, "exited", exit_code=code))


def test_outcomes_reach_snakemake_in_order_from_the_reports_thread(tmp_path):
    snakemake = FakeSnakemake()
    observer, _, _ = make_observer(tmp_path, snakemake)
    tickets = [make_ticket(k, make_job(k), tmp_path) for k in range(1, 6)]
    for ticket in tickets:
        observer.queued(ticket)
        finish(observer, ticket)
    observer.reports.close()
    assert [c[1] for c in snakemake.calls] == [1, 2, 3, 4, 5]
    assert {c[2] for c in snakemake.calls} == {"matensemble-reports"}
    assert not any((tmp_path / f"script{k}.py").exists() for k in range(1, 6))
    assert observer.status.done == 5


def test_a_failure_is_reported_with_reason_and_log_and_halts_without_retries(tmp_path):
    snakemake = FakeSnakemake()
    observer, _, halted = make_observer(tmp_path, snakemake)
    ticket = make_ticket(1, make_job(1), tmp_path)
    observer.queued(ticket)
    finish(observer, ticket, JobStatus.FAILED, 3)
    observer.reports.close()
    ((kind, jobid, message),) = snakemake.calls
    assert (kind, jobid) == ("error", 1)
    assert "exited" in message
    assert "Log: logs/1.log" in message
    assert halted == [True]


def test_a_failure_that_will_be_retried_does_not_halt(tmp_path):
    observer, _, halted = make_observer(tmp_path, FakeSnakemake())
    ticket = make_ticket(1, make_job(1, restart_times=2, attempt=1), tmp_path)
    observer.queued(ticket)
    finish(observer, ticket, JobStatus.FAILED, 1)
    observer.reports.close()
    assert halted == []


def test_snakemakes_own_failure_after_success_is_journaled_as_failed(tmp_path):
    observer, journal, _ = make_observer(tmp_path, FakeSnakemake())
    job = make_job(1)
    ticket = make_ticket(1, job, tmp_path)
    observer.queued(ticket)
    finish(observer, ticket)
    observer.snakemake_failed(job.jobid, job.attempt)  # e.g. missing output files
    observer.reports.close()
    journal.close()
    (record,) = read_journal(journal.path).jobs
    assert record.status == "failed"
    assert observer.status.failed == 1
    assert observer.status.done == 0


def test_withdrawn_jobs_say_why_and_are_handed_back_to_snakemake(tmp_path, caplog):
    snakemake = FakeSnakemake()
    observer, _, _ = make_observer(tmp_path, snakemake)
    tickets = [make_ticket(k, make_job(k), tmp_path) for k in (1, 2)]
    for ticket in tickets:
        observer.queued(ticket)
    with caplog.at_level("INFO"):
        observer.on_withdrawn(tickets, "interrupted")
    observer.reports.close()
    assert "the run was interrupted" in caplog.text
    assert "--keep-going" not in caplog.text
    assert snakemake.not_started == [1, 2]


def test_a_report_that_raises_does_not_stop_the_following_ones():
    reports = Reports()
    delivered = []

    def broken():
        raise RuntimeError("snakemake said no")

    reports.post(broken)
    reports.post(delivered.append, "next")
    reports.close()
    assert delivered == ["next"]


def test_jobs_withdrawn_at_the_allocations_end_are_told_with_the_resume_command(tmp_path, caplog):
    import logging
    import time

    from snakemake_executor_plugin_matensemble.dispatcher import Withdrawal

    observer, _, _ = make_observer(tmp_path, FakeSnakemake())
    observer.resume_argv = ["snakemake", "-j4"]
    observer.packer.deadline.set_end(time.time() + 100)
    tickets = [make_ticket(k, make_job(k), tmp_path) for k in (1, 2)]
    for ticket in tickets:
        observer.queued(ticket)
    with caplog.at_level(logging.WARNING, logger="snakemake.logging.matensemble"):
        observer.on_withdrawn(tickets[:1], Withdrawal.DEADLINE)
        observer.on_withdrawn(tickets[1:], Withdrawal.DEADLINE)
    first, more = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and "allocation ends" in r.getMessage()
    ]
    assert "1 queued job(s) cannot finish before then" in first
    assert "snakemake -j4 --rerun-incomplete" in first
    assert "1 more job(s)" in more
    assert "(2 in all)" in more
    assert len(observer.deadline_jobs) == 2


def test_a_job_retried_after_the_allocations_end_counts_once(tmp_path, caplog):
    """With --retries, Snakemake hands a withdrawn job back; it is the same job."""
    import logging
    import time

    from snakemake_executor_plugin_matensemble.dispatcher import Withdrawal

    observer, _, _ = make_observer(tmp_path, FakeSnakemake())
    observer.packer.deadline.set_end(time.time() + 100)
    job = make_job(1)
    first, retry = make_ticket(1, job, tmp_path), make_ticket(2, job, tmp_path)
    for ticket in (first, retry):
        observer.queued(ticket)
    with caplog.at_level(logging.WARNING, logger="snakemake.logging.matensemble"):
        observer.on_withdrawn([first], Withdrawal.DEADLINE)
        observer.on_withdrawn([retry], Withdrawal.DEADLINE)
    told = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and "allocation ends" in r.getMessage()
    ]
    assert len(told) == 1, told
    assert len(observer.deadline_jobs) == 1


def test_a_drained_rank_is_told_only_when_it_changed_the_allocation(tmp_path, caplog):
    import logging

    from snakemake_executor_plugin_matensemble.backends.base import ResourceEvent

    observer, journal, _ = make_observer(tmp_path, FakeSnakemake())
    with caplog.at_level(logging.INFO, logger="snakemake.logging.matensemble"):
        observer.on_resource_event(ResourceEvent("drain", (0,), "admin", 1.0), changed=True)
        observer.on_resource_event(ResourceEvent("drain", (0,), "admin", 2.0), changed=False)
    (message,) = [r.getMessage() for r in caplog.records if "drained" in r.getMessage()]
    assert message.startswith("matensemble: n0 (rank 0) drained: admin; no new jobs start there")
    journal.close()
    assert [e["event"] for e in iter_events(journal.path)].count("resource") == 2
