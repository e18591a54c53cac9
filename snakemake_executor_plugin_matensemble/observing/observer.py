"""The observer: what happens to each job, told to Snakemake, the journal and the user.

The dispatcher calls it from its own thread with typed events (a job started,
finished, was withdrawn; the dispatcher crashed; a status tick). It writes the
journal, keeps the counters of the status line, removes the files a job no
longer needs, and reports every outcome to Snakemake. It never raises into
the dispatcher: a failure to report is logged.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from ..backends.base import Backend, JobFinished, JobStatus, ResourceEvent, ResourceEventKind
from ..dispatcher import Withdrawal
from ..intake import naming
from ..intake.intake import Submission
from ..packing.allocation import Allocation
from ..packing.deadline import format_epoch, resume_command
from ..packing.packer import Packer
from ..packing.queue import JobTicket
from ..snakemake_boundary import JobRecord, SnakemakeBoundary
from .journal import Journal, find_previous_journal, read_journal
from .run_end import LeftForTheEnd, RunEndRecorder
from .status import ENCLOSING, RunStatus, StatusReporter
from .summary import summarize
from .summary_text import end_of_run_lines

log = logging.getLogger("snakemake.logging.matensemble.observer")

#: What the user reads when queued jobs were not started, by reason.
_WITHDRAWN_BECAUSE = {
    Withdrawal.FAILURE: "a job failed; use --keep-going to run independent jobs after a failure",
    Withdrawal.INTERRUPTED: "the run was interrupted",
    Withdrawal.DEADLINE: "they could not finish before the allocation ends",
}

#: What the journal says of withdrawn jobs, where it differs from the above.
_JOURNALED_BECAUSE = {Withdrawal.DEADLINE: "cannot finish before the allocation ends"}


def open_run_journal(settings: Any, run_id: str, backend: str, allocation: Allocation) -> Journal:
    """The run's journal, started, and linked to the previous run's when that
    one left jobs undone (e.g. the previous allocation ended first)."""
    journal = Journal(Path(settings.journal_dir) / run_id)
    journal.run_started(run_id, backend, settings.policy, allocation)
    previous = find_previous_journal(settings.journal_dir, journal.path)
    if previous is not None:
        try:
            earlier = summarize(read_journal(previous))
        except OSError:
            return journal
        left = earlier.not_started + earlier.failed + earlier.cancelled + earlier.unfinished
        if left:
            journal.previous_run(previous.parent.name, previous, earlier.done, left)
    return journal


class Reports:
    """Outcomes reported to Snakemake in order, from a thread of their own.

    Snakemake's scheduler takes its lock in every callback, and holds it while
    it post-processes finished jobs (checking outputs, writing metadata; for
    a group, every member). Reporting from the dispatcher thread would stop
    the dispatcher for that long: finished jobs unnoticed, free cores idle.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[..., Any], tuple, dict] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._run, name="matensemble-reports", daemon=True)
        self._thread.start()

    def post(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self._queue.put((call, args, kwargs))

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued, then stop (seconds to wait; a run that is
        being cancelled no longer needs late reports)."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            call, args, kwargs = item
            try:
                call(*args, **kwargs)
            except Exception:  # never lose the following reports
                log.exception("matensemble: could not report a job's outcome to Snakemake.")


class SnakemakeReports(Protocol):
    """The executor's reporting half of Snakemake's executor interface."""

    def report_job_success(self, job_info: Any) -> None: ...

    def report_job_error(self, job_info: Any, msg: str | None = None, **kwargs: Any) -> None: ...


class Observer:
    """Receives the dispatcher's events (dispatcher thread only)."""

    def __init__(
        self,
        snakemake: SnakemakeReports,
        boundary: SnakemakeBoundary,
        journal: Journal,
        status: StatusReporter,
        packer: Packer,
        allocation: Allocation,
        backend: Backend,
        resume_argv: Sequence[str] | None = None,
    ):
        self.snakemake = snakemake
        self.boundary = boundary
        self.journal = journal
        self.status = status
        self.packer = packer
        self.allocation = allocation
        self.backend_name = backend.name
        #: record backend ids with Snakemake's incomplete markers, so that a
        #: restarted run re-attaches (backends that can re-attach to jobs)
        self.register_backend_ids = backend.can_attach
        #: hands outcomes to Snakemake from its own thread (see :class:`Reports`)
        self.reports = Reports()
        #: the snakemake command line, for the resume command (default sys.argv)
        self.resume_argv = resume_argv
        #: Snakemake jobs withdrawn so far because the allocation ends (each once,
        #: however often Snakemake's --retries hands it back)
        self.deadline_jobs: set[str] = set()
        #: (jobid, attempt) -> journal key of attempts the backend finished well
        self._succeeded: dict[tuple[str, int], tuple[int, JobRecord]] = {}
        #: the run's child Flux instances (none: the status line shows no split)
        self.instances = child_instance_names(backend)
        #: journal key -> the instance a started job runs in (with children only)
        self._instance_of: dict[int, str] = {}
        #: why the run ended, beside the journal (see run_end.py)
        self.run_end = RunEndRecorder.beside(journal.path, journal.path.parent.name)

    # -- journal on intake (Snakemake's thread) ---------------------------------
    def queued(self, ticket: JobTicket[Submission]) -> None:
        submission = ticket.payload
        assert submission is not None
        self.journal.queued(
            ticket.key,
            naming.journal_record(submission.record),
            ticket.request,
            submission.log_path,
        )

    def refused(self, key: int, record: JobRecord, log_dir: str, error: BaseException) -> None:
        """The job could not be queued (its command could not be prepared)."""
        log_path = str(naming.log_path(log_dir, record))
        self.journal.refused(key, naming.journal_record(record), log_path, str(error))

    # -- dispatcher events ---------------------------------------------------------
    def on_started(
        self, ticket: JobTicket[Submission], backend_id: str, time: float, instance: str = ""
    ) -> None:
        """``time``: when the job started, epoch seconds (``JobStarted.time``, the
        journal's clock); ``instance``: the child Flux instance it runs in ("":
        the enclosing or only one)."""
        submission = ticket.payload
        assert submission is not None
        submission.job_info.external_jobid = backend_id
        if self.register_backend_ids:
            # a restarted run re-attaches instead of running the job twice
            self.boundary.register_external_jobid(submission.record, backend_id)
        self.journal.started(ticket.key, backend_id, ticket.placement, time, instance)
        if self.instances:
            self._instance_of[ticket.key] = instance or ENCLOSING
        where = f" in child instance {instance}" if instance else ""
        log.debug(
            f"matensemble: started {submission.name} as {self.backend_name} job "
            f"{backend_id}{where} on {ticket.placement.describe()}; log {submission.log_path}"
        )

    def on_finished(self, ticket: JobTicket[Submission], result: JobFinished) -> bool:
        """Report ``result``; True when the run must start no more jobs (a
        failure Snakemake will not retry, without --keep-going)."""
        submission = ticket.payload
        assert submission is not None
        self._instance_of.pop(ticket.key, None)
        for path in submission.command.cleanup:
            with contextlib.suppress(OSError):
                os.remove(path)
        self.journal.ended(
            ticket.key,
            _end_event(result.status),
            result.status.value,
            end=result.time,
            exit_code=result.exit_code,
            signal=result.signal,
            reason=result.reason,
        )
        record = submission.record
        self.status.finished(record.jobid, result.ok)
        if result.ok:
            self._succeeded[record.identity] = (ticket.key, record)
            self.reports.post(self.snakemake.report_job_success, submission.job_info)
            return False
        return self._report_failure(submission, result)

    def snakemake_failed(self, jobid: str, attempt: int) -> None:
        """Snakemake failed an attempt the backend finished well (e.g. its
        output files are missing): the journal and the counters say so."""
        succeeded = self._succeeded.pop((jobid, attempt), None)
        if succeeded is not None:
            key, record = succeeded
            self.journal.verdict(
                key, "failed", "Snakemake failed it after it ended (e.g. missing output files)"
            )
            self.status.finished(jobid, False)
            if not record.retried:
                self.run_end.job_failed(
                    record.rule, naming.display_name(record), "", "missing output files"
                )

    def _report_failure(self, submission: Submission, result: JobFinished) -> bool:
        message = f"matensemble: {submission.name} {result.reason}. Log: {submission.log_path}"
        details = {"exit_code": result.exit_code} if result.exit_code is not None else {}
        self.reports.post(
            self.snakemake.report_job_error,
            submission.job_info,
            msg=message,
            aux_logs=[submission.log_path],
            **details,
        )
        if not submission.record.retried:
            self.run_end.job_failed(
                submission.record.rule, submission.name, submission.log_path, message
            )
        return not submission.record.retried and not self.boundary.keep_going()

    def on_withdrawn(self, tickets: list[JobTicket[Submission]], reason: Withdrawal) -> None:
        why = _WITHDRAWN_BECAUSE[reason]
        if reason is Withdrawal.DEADLINE:
            self._say_deadline(tickets)
            left = [
                LeftForTheEnd(t.payload.name, self.packer.deadline.estimate(t)) for t in tickets
            ]
            self.run_end.left_for_the_end(left, self.packer.deadline.end_epoch)
        else:
            log.info(f"matensemble: {len(tickets)} queued job(s) were not started ({why}).")
        journaled = _JOURNALED_BECAUSE.get(reason, f"not started: {why}")
        for ticket in tickets:
            self.journal.ended(ticket.key, "cancelled", "cancelled", reason=journaled)
            self.reports.post(self.boundary.job_not_started, ticket.payload.record)

    def _say_deadline(self, tickets: list[JobTicket[Submission]]) -> None:
        """Queued jobs cannot finish before the allocation ends: how many (a job
        Snakemake retried counts once), when it ends and how to resume."""
        first = not self.deadline_jobs
        jobs = {ticket.payload.record.jobid for ticket in tickets}
        count = len(jobs - self.deadline_jobs)
        self.deadline_jobs |= jobs
        if not count:
            return
        end_epoch = self.packer.deadline.end_epoch
        end = format_epoch(end_epoch) if end_epoch is not None else "soon"
        resume = resume_command(self.resume_argv)
        if first:
            log.warning(
                f"matensemble: the allocation ends at {end}: {count} queued job(s) "
                f"cannot finish before then and are not started "
                f"({len(self.packer.running)} running job(s) finish first; jobs that "
                "depend on them are left too). Resume in the next allocation with:\n"
                f"    {resume}"
            )
        else:
            log.warning(
                f"matensemble: {count} more job(s) cannot finish before the allocation "
                f"ends at {end} ({len(self.deadline_jobs)} in all); resume with: {resume}"
            )

    def on_resource_event(self, event: ResourceEvent, changed: bool = True) -> None:
        """The allocation changed (drained, undrained, lost or returned ranks, a
        new end): the user is told what it means where it ``changed`` the
        allocation, the journal keeps it for the summary and the report."""
        if changed:
            self._say_resource_event(event)
        expiration = event.kind is ResourceEventKind.EXPIRATION
        fields = {"expiration": event.expiration} if expiration else {}
        self.journal.resource_event(
            event.kind, list(event.ranks), event.reason, at=event.time or None, **fields
        )

    def _say_resource_event(self, event: ResourceEvent) -> None:
        names = naming.node_names(self.allocation, event.ranks)
        why = f": {event.reason}" if event.reason else ""
        if event.kind is ResourceEventKind.DRAIN:
            log.warning(
                f"matensemble: {names} drained{why}; no new jobs start there, running ones finish."
            )
        elif event.kind is ResourceEventKind.UNDRAIN:
            log.info(f"matensemble: {names} undrained; jobs start there again.")
        elif event.kind is ResourceEventKind.DOWN:
            log.error(
                f"matensemble: {names} went down{why}; its jobs are lost "
                "(--retries reruns them on the ranks left)."
            )
        elif event.kind is ResourceEventKind.UP:
            log.info(f"matensemble: {names} is up again; jobs start there again.")

    def on_tick(self) -> None:
        self.status.report(self.current_status())

    def on_crash(self, error: BaseException, tickets: list[JobTicket[Submission]]) -> None:
        self.reports.post(self.boundary.executor_failed, error)
        for ticket in tickets:
            self.reports.post(self.boundary.job_not_started, ticket.payload.record)

    def run_ended(self, **cpu_figures: float) -> None:
        """Close the journal and tell the user how the run went (Snakemake's
        thread, after the dispatcher stopped); the resume command comes last."""
        self.reports.close()
        if self.status.status_file is not None:
            self.status.write_file(self.current_status())
        self.journal.close(**cpu_figures)
        self.run_end.finish(self.status.done, self.status.failed)
        path = self.journal.path
        lines = end_of_run_lines(path)
        lines.append(f"matensemble: journal {path} (matensemble-report {path} draws the timeline).")
        for line in lines:
            log.info(line)
        if self.deadline_jobs:
            log.warning(
                f"matensemble: {len(self.deadline_jobs)} job(s) could not finish before the "
                f"allocation ended. Resume in the next allocation with:\n  {resume_command()}"
            )

    def current_status(self) -> RunStatus:
        return RunStatus(
            queued=len(self.packer.queue),
            running=len(self.packer.running),
            free_cores=self.allocation.free_cores,
            total_cores=self.allocation.total_cores,
            free_gpus=self.allocation.free_gpus,
            total_gpus=self.allocation.total_gpus,
            done=self.status.done,
            failed=self.status.failed,
            running_by_instance=self._running_by_instance(),
        )

    def _running_by_instance(self) -> dict[str, int] | None:
        """Started jobs per child instance (and the enclosing one), with children."""
        if not self.instances:
            return None
        counts = dict.fromkeys(self.instances, 0)
        for name in self._instance_of.values():
            counts[name] = counts.get(name, 0) + 1
        return counts


def child_instance_names(backend: Backend) -> tuple[str, ...]:
    """The names of the backend's child instances, then ``enclosing`` (none:
    the backend runs no children)."""
    children = getattr(backend, "children", None)
    names = tuple(child.name for child in getattr(children, "children", None) or ())
    return (*names, ENCLOSING) if names else ()


def _end_event(status: JobStatus) -> str:
    if status is JobStatus.SUCCESS:
        return "finished"
    return "failed" if status.failed else "cancelled"
