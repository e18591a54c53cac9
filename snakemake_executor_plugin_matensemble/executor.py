"""The Snakemake-facing executor: only Snakemake's executor interface.

A job's route: Snakemake -> :meth:`Executor.run_jobs` -> the boundary reads it
once (:class:`.snakemake_boundary.JobRecord`) -> :class:`.intake.intake.Intake`
(request, command, names, ticket) -> :class:`.dispatcher.Dispatcher` (packer,
backend) -> :class:`.observing.observer.Observer` (journal, status, outcome
reported to Snakemake). See docs/architecture.md.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator

from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo
from snakemake_interface_executor_plugins.executors.real import RealExecutor
from snakemake_interface_executor_plugins.jobs import JobExecutorInterface
from snakemake_interface_executor_plugins.settings import ExecMode

from .backends import create_backend
from .dispatcher import Dispatcher
from .errors import JobsCannotRunError
from .intake.command import CommandBuilder
from .intake.intake import Intake
from .observing.observer import Observer, open_run_journal
from .observing.runtimes import durations_from_journals
from .observing.status import StatusReporter
from .packing.allocation import Allocation
from .packing.deadline import DeadlineGuard
from .packing.ordering import make_order
from .packing.packer import Packer
from .packing.policies import make_policy
from .packing.queue import JobTicket
from .settings import ExecutorSettings
from .signals import cancel_on_sigterm
from .snakemake_boundary import JobRecord, SnakemakeBoundary
from .snakemake_boundary.timestamps import level_pause

#: the longest a prepared job waits before the dispatcher sees it (seconds)
HANDOVER_INTERVAL_S = 0.2


class Executor(RealExecutor):
    """Packs every Snakemake job into the allocation and runs it on the backend."""

    def __post_init__(self) -> None:
        self.settings: ExecutorSettings = self.workflow.executor_settings or ExecutorSettings()
        self.settings.check()
        self.boundary = SnakemakeBoundary(self.workflow)
        self._shorten_group_level_pause()
        self._job_cores: int | None = None
        self._stopped = False
        #: CPU seconds (thread time) of Snakemake's thread inside the plugin's calls
        self._scheduler_cpu_s = 0.0
        #: ... of which Snakemake's own per-job work (see :meth:`snakemake_work`)
        self._snakemake_cpu_s = 0.0
        self.run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        self.backend = create_backend(self.settings, self.run_id)
        self.allocation = Allocation(self.backend.discover(), self.backend.resource_hints)
        self.logger.info(
            f"matensemble: {self.backend.name} backend, allocation of "
            f"{self.allocation.describe()}, policy {self.settings.policy}, "
            f"order {self.settings.order}."
        )
        commands = CommandBuilder(
            self.boundary,
            self._per_job_command,
            self.snakemake_work,
            direct_enabled=not self.settings.per_job_snakemake,
        )
        self.intake = Intake(
            self.boundary,
            self.allocation,
            self.backend,
            commands,
            self.settings.log_dir,
            self.snakemake_work,
            base_env={**os.environ, **self.envvars()},
        )
        jobs_to_run = self._check_all_jobs_up_front()
        self.backend.settle_leftovers(self.intake.resumable_ids())
        deadline = DeadlineGuard.from_settings(self.settings, durations_from_journals)
        self.packer = Packer(
            self.allocation,
            make_policy(self.settings.policy, self.settings.reserve_after),
            deadline=deadline,
            order=make_order(self.settings.order, deadline.estimator),
        )
        self.journal = open_run_journal(
            self.settings, self.run_id, self.backend.name, self.allocation
        )
        status = StatusReporter(self.settings.status_interval, self.settings.status_file)
        self.observer = Observer(
            self,
            self.boundary,
            self.journal,
            status,
            self.packer,
            self.allocation,
            self.backend,
        )
        self.dispatcher = Dispatcher(
            self.packer,
            self.backend,
            self.observer,
            self.intake.launch_spec,
            tick_interval=status.tick_interval,
        )
        self.observer.run_end.total_jobs = jobs_to_run
        self.dispatcher.start()

    def _shorten_group_level_pause(self) -> None:
        pause = self.boundary.shorten_group_level_pause(level_pause(os.getcwd()))
        if pause is not None:
            self.logger.debug(
                f"matensemble: {pause * 1000:.1f} ms between a group job's levels when "
                "Snakemake touches their outputs (twice this file system's mtime step)."
            )

    # -- RealExecutor interface -------------------------------------------------
    @property
    def cores(self) -> int | str:
        """``--cores`` of the per-job Snakemake command: the job's own cores."""
        return self._job_cores if self._job_cores is not None else "all"

    def get_exec_mode(self) -> ExecMode:
        return ExecMode.REMOTE

    def get_python_executable(self) -> str:
        return sys.executable

    def run_job(self, job: JobExecutorInterface) -> None:
        self.run_jobs([job])

    def run_jobs(self, jobs: list[JobExecutorInterface]) -> None:
        """Turn Snakemake's jobs into tickets and hand them to the dispatcher in
        batches, one at least every :data:`HANDOVER_INTERVAL_S`: when Snakemake
        hands over 100,000 jobs at once, the first ones start while the rest are
        still being prepared (a hand-over prepared in less time is one batch, so
        the queue order applies to all of it)."""
        started = time.thread_time()
        try:
            cancel_on_sigterm()
            batch: list[JobTicket] = []
            due = time.monotonic() + HANDOVER_INTERVAL_S
            for job in jobs:
                ticket = self._ticket_or_error(job)
                if ticket is not None:
                    batch.append(ticket)
                if batch and time.monotonic() >= due:
                    self.dispatcher.submit(batch)
                    batch, due = [], time.monotonic() + HANDOVER_INTERVAL_S
            if batch:
                self.dispatcher.submit(batch)
        finally:
            self._scheduler_cpu_s += time.thread_time() - started

    def _ticket_or_error(self, job: JobExecutorInterface) -> JobTicket | None:
        with self.snakemake_work():
            self.run_job_pre(job)
        record = None
        try:
            record = self.intake.record(job)  # the job read once
            ticket = self.intake.ticket_for(record, self._report_submission)
        except Exception as error:  # bad request, unformattable command, ...
            if record is None:  # its values could not be read: its names only
                record = self.boundary.identity(job)
            self.observer.refused(self.intake.new_key(), record, self.settings.log_dir, error)
            self.report_job_error(SubmittedJobInfo(job), msg=f"matensemble: {error}")
            return None
        self.observer.queued(ticket)
        return ticket

    def _report_submission(
        self, record: JobRecord, external_jobid: str | None, log_path: str
    ) -> SubmittedJobInfo:
        """Tell Snakemake the job was submitted (its incomplete markers)."""
        job_info = SubmittedJobInfo(
            record.job, external_jobid=external_jobid, aux={"log": log_path}
        )
        self.report_job_submission(job_info)
        return job_info

    def cancel(self) -> None:
        if not self._stopped and hasattr(self, "observer"):
            self.observer.run_end.interrupted()
        self.shutdown()

    def shutdown(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.dispatcher.stop()
        self.boundary.close()  # every change made to Snakemake undone
        own = self._scheduler_cpu_s - self._snakemake_cpu_s
        self.observer.run_ended(
            plugin_cpu_s=round(own + self.dispatcher.cpu_s, 6),
            scheduler_thread_cpu_s=round(own, 6),
            dispatcher_thread_cpu_s=round(self.dispatcher.cpu_s, 6),
            snakemake_work_cpu_s=round(self._snakemake_cpu_s, 6),
        )

    def print_job_error(self, job_info: SubmittedJobInfo, msg: str | None = None, **kwargs):
        if msg and job_info.job.is_group():
            # Snakemake prints a group's error without the executor's message.
            self.logger.error(msg)
        super().print_job_error(job_info, msg, **kwargs)

    def handle_job_success(self, job: JobExecutorInterface) -> None:
        pass

    def handle_job_error(self, job: JobExecutorInterface) -> None:
        self.observer.snakemake_failed(str(job.jobid), job.attempt)

    # -- helpers ---------------------------------------------------------------
    @contextlib.contextmanager
    def snakemake_work(self) -> Iterator[None]:
        """Time Snakemake's own per-job work done in the plugin's calls (printing
        the job, incomplete markers, preparing outputs), which any executor pays,
        so that the plugin's own cost can be reported apart from it."""
        started = time.thread_time()
        try:
            yield
        finally:
            self._snakemake_cpu_s += time.thread_time() - started

    def _per_job_command(self, record: JobRecord, cores: int) -> str:
        """Snakemake's per-job command, restricted to the job's ``cores``."""
        self._job_cores = cores
        try:
            return self.format_job_exec(record.job)
        finally:
            self._job_cores = None

    def _check_all_jobs_up_front(self) -> int | None:
        """Bad input fails before anything runs (see :meth:`.intake.Intake.check_up_front`);
        returns how many jobs the executor will run (None: unknown)."""
        try:
            jobs = self.boundary.needrun_jobs()
            self.intake.check_up_front(jobs)
            return self.boundary.executor_job_count(jobs)
        except JobsCannotRunError:
            self.backend.close()  # nothing was started: let go of Flux / the guard
            raise
