"""The Snakemake-facing executor: jobs in, packed onto the allocation, outcomes out."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from snakemake_interface_common.exceptions import WorkflowError
from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo
from snakemake_interface_executor_plugins.executors.real import RealExecutor
from snakemake_interface_executor_plugins.jobs import JobExecutorInterface
from snakemake_interface_executor_plugins.settings import ExecMode

from . import naming
from .allocation import Allocation
from .backends import JobFinished, LaunchSpec, create_backend
from .backends import Status as BackendStatus
from .backends.base import RunningJob
from .command import CommandBuilder, JobCommand
from .dispatcher import Dispatcher
from .errors import InvalidRequestError
from .journal import Journal, read_journal
from .packer import JobTicket, Packer
from .policies import make_policy
from .request import (
    CONFUSABLE_RESOURCES,
    ResourceRequest,
    request_from_resources,
    unread_resources,
)
from .settings import ExecutorSettings
from .status import Status, StatusReporter
from .summary import summarize, summary_lines


@dataclass
class Submission:
    """What the dispatcher needs of one Snakemake job (built in Snakemake's thread)."""

    job_info: SubmittedJobInfo
    command: JobCommand
    name: str
    log_path: str


class Executor(RealExecutor):
    """Packs every Snakemake job into the allocation and runs it on the backend."""

    def __post_init__(self) -> None:
        self.settings: ExecutorSettings = self.workflow.executor_settings or ExecutorSettings()
        self.settings.check()
        self._job_cores: int | None = None
        self._keys = itertools.count(1)
        self._noted: set[tuple[str, str]] = set()
        self._sigterm_installed = False
        self.run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        self.backend = create_backend(self.settings, self.run_id)
        self.allocation = Allocation(self.backend.discover())
        self.logger.info(
            f"matensemble: {self.backend.name} backend, allocation of "
            f"{self.allocation.describe()}, policy {self.settings.policy}."
        )
        self.commands = CommandBuilder(self, not self.settings.per_job_snakemake)
        self.base_env = {**os.environ, **self.envvars()}
        self.workdir = os.getcwd()
        try:
            self._check_all_jobs_up_front()
        except WorkflowError:
            self.backend.close()  # nothing was started: let go of Flux / the guard
            raise
        self.packer = Packer(
            self.allocation, make_policy(self.settings.policy, self.settings.reserve_after)
        )
        self.journal = Journal(Path(self.settings.journal_dir) / self.run_id)
        self.journal.run_started(
            self.run_id, self.backend.name, self.settings.policy, self.allocation
        )
        self.status = StatusReporter(self.settings.status_interval, self.settings.status_file)
        self.dispatcher = Dispatcher(
            self.packer,
            self.backend,
            self,
            self._launch_spec,
            tick_interval=self.status.tick_interval,
        )
        self._stopped = False
        #: CPU seconds spent in Snakemake's scheduler thread inside the plugin's calls
        self._scheduler_cpu_s = 0.0
        #: ... of which Snakemake's own per-job work (see :meth:`snakemake_work`)
        self._snakemake_cpu_s = 0.0
        self.dispatcher.start()

    # -- RealExecutor interface -------------------------------------------------
    @property
    def cores(self) -> int | str:
        """``--cores`` of the per-job Snakemake command: the job's own cores."""
        return self._job_cores if self._job_cores is not None else "all"

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

    @contextlib.contextmanager
    def cores_for_job(self, cores: int) -> Iterator[None]:
        self._job_cores = cores
        try:
            yield
        finally:
            self._job_cores = None

    def get_exec_mode(self) -> ExecMode:
        return ExecMode.REMOTE

    def get_python_executable(self) -> str:
        return sys.executable

    def run_job(self, job: JobExecutorInterface) -> None:
        self.run_jobs([job])

    def run_jobs(self, jobs: list[JobExecutorInterface]) -> None:
        started = time.thread_time()
        try:
            self._run_jobs(jobs)
        finally:
            self._scheduler_cpu_s += time.thread_time() - started

    def _run_jobs(self, jobs: list[JobExecutorInterface]) -> None:
        self._install_sigterm_handler()
        tickets = []
        for job in jobs:
            with self.snakemake_work():
                self.run_job_pre(job)
            try:
                tickets.append(self._ticket_for(job))
            except Exception as error:  # bad request, unformattable command, ...
                self.report_job_error(SubmittedJobInfo(job), msg=f"matensemble: {error}")
        if tickets:
            self.dispatcher.submit(tickets)

    def cancel(self) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.dispatcher.stop()
        if self.status.status_file is not None:
            self.status.write_file(self.current_status())
        own = self._scheduler_cpu_s - self._snakemake_cpu_s
        self.journal.close(
            plugin_cpu_s=round(own + self.dispatcher.cpu_s, 6),
            scheduler_thread_cpu_s=round(own, 6),
            dispatcher_thread_cpu_s=round(self.dispatcher.cpu_s, 6),
            snakemake_work_cpu_s=round(self._snakemake_cpu_s, 6),
        )
        for line in summary_lines(summarize(read_journal(self.journal.path))):
            self.logger.info(line)
        self.logger.info(
            f"matensemble: journal {self.journal.path} "
            f"(matensemble-report {self.journal.path} draws the timeline)."
        )

    def handle_job_success(self, job: JobExecutorInterface) -> None:
        pass

    def handle_job_error(self, job: JobExecutorInterface) -> None:
        pass

    # -- from Snakemake job to ticket ------------------------------------------
    def request_for(self, job: Any) -> ResourceRequest:
        """The checked request of ``job``; raises :class:`InvalidRequestError`."""
        rule = naming.rule_of(job)
        self._note_unread(job)
        resources = _group_resources(job) if job.is_group() else job.resources
        request = request_from_resources(lambda: naming.where(job), rule, job.threads, resources)
        problem = self.allocation.why_never_fits(request)
        if problem is not None:
            field, value, text = problem
            raise InvalidRequestError(
                naming.where(job),
                field,
                value,
                f"{text}; the job could never start",
                f"lower {field} of {rule}, or run in a larger allocation",
            )
        return request

    def _ticket_for(self, job: Any) -> JobTicket:
        request = self.request_for(job)
        log_path = naming.log_path(self.settings.log_dir, job)
        running = self._still_running(job)
        if running is None:
            command = self.commands.build(
                job, request.total_cores, request.tasks, has_mpi=request.mpi is not None
            )
        else:  # re-attach: nothing to prepare or launch, outputs are being written
            command = JobCommand(command="", path="attached")
        submission = Submission(
            job_info=SubmittedJobInfo(
                job,
                external_jobid=running.backend_id if running else None,
                aux={"log": str(log_path)},
            ),
            command=command,
            name=naming.display_name(job),
            log_path=str(log_path),
        )
        # registers the incomplete markers (keeping a re-attached job's id)
        with self.snakemake_work():
            self.report_job_submission(submission.job_info)
        ticket = JobTicket(
            key=next(self._keys),
            request=request,
            priority=_priority(job),
            payload=submission,
            attach=running,
        )
        self.journal.queued(
            ticket.key,
            {
                "rule": naming.rule_of(job),
                "wildcards": naming.wildcards_of(job),
                "jobid": job.jobid,
                "attempt": job.attempt,
            },
            request,
            str(log_path),
        )
        return ticket

    def _still_running(self, job: Any) -> RunningJob | None:
        """The backend job an earlier, killed run started for ``job``, if it runs."""
        if not self.backend.can_attach:
            return None
        external = self.workflow.dag.incomplete_external_jobid(job)
        if not external:
            return None
        return self.backend.find_running(external)

    def _launch_spec(self, ticket: JobTicket) -> LaunchSpec:
        submission: Submission = ticket.payload
        return LaunchSpec(
            key=ticket.key,
            command=submission.command.command,
            name=submission.name,
            cwd=self.workdir,
            env={**self.base_env, **submission.command.env},
            log_path=submission.log_path,
            request=ticket.request,
            shell=submission.command.shell,
            per_task=submission.command.per_task,
            priority=ticket.priority,
            attributes={"workdir": self.workdir, "jobid": str(submission.job_info.job.jobid)},
        )

    def _check_all_jobs_up_front(self) -> None:
        """Check every job of the DAG now, so bad input fails before anything runs."""
        needrun = getattr(self.workflow.dag, "needrun_jobs", None)
        if needrun is None:
            return
        problems: dict[str, str] = {}
        for job in needrun():
            if job.is_local or job.rule.name in problems:
                continue
            try:
                self.request_for(job)
            except InvalidRequestError as error:
                problems[job.rule.name] = str(error)
            except Exception as error:  # resources that need inputs not made yet
                self.logger.debug(f"matensemble: cannot check {job} yet: {error}")
        if problems:
            raise WorkflowError(
                "matensemble: these jobs cannot run as requested (nothing was started):\n"
                + "\n".join(f"  - {text}" for text in problems.values())
            )

    def _note_unread(self, job: Any) -> None:
        resources = _group_resources(job) if job.is_group() else job.resources
        unenforced, confusable = unread_resources(resources)
        rule = naming.rule_of(job)
        for name in confusable:
            if (rule, name) not in self._noted:
                self._noted.add((rule, name))
                self.logger.warning(
                    f"matensemble: {rule} sets resource '{name}', which this executor "
                    f"does not read; did you mean '{CONFUSABLE_RESOURCES[name]}'?"
                )
        for name in unenforced:
            if ("*", name) not in self._noted:
                self._noted.add(("*", name))
                self.logger.info(
                    f"matensemble: resource '{name}' is accepted but not enforced "
                    f"by the {self.backend.name} backend (memory and disk are not "
                    "limited per job)."
                )

    # -- dispatcher callbacks (dispatcher thread) -------------------------------
    def on_started(self, ticket: JobTicket, backend_id: str, time: float) -> None:
        submission: Submission = ticket.payload
        submission.job_info.external_jobid = backend_id
        if self.backend.name == "flux":
            # Record the Flux id with Snakemake's incomplete markers, so that a
            # restarted run re-attaches instead of running the job twice.
            submission.job_info.job.register(external_jobid=backend_id)
        self.journal.started(ticket.key, backend_id, ticket.placement, time)
        self.logger.debug(
            f"matensemble: started {submission.name} as {self.backend.name} job "
            f"{backend_id} on {ticket.placement.describe()}; log {submission.log_path}"
        )

    def on_finished(self, ticket: JobTicket, result: JobFinished) -> None:
        submission: Submission = ticket.payload
        for path in submission.command.cleanup:
            with contextlib.suppress(OSError):
                os.remove(path)
        self.journal.ended(
            ticket.key,
            _end_event(result.status),
            result.status.value,
            exit_code=result.exit_code,
            signal=result.signal,
            reason=result.reason,
        )
        if result.ok:
            self.status.done += 1
            self.report_job_success(submission.job_info)
            return
        self.status.failed += 1
        job = submission.job_info.job
        details = {"exit_code": result.exit_code} if result.exit_code is not None else {}
        self.report_job_error(
            submission.job_info,
            msg=f"matensemble: {submission.name} {result.reason}. Log: {submission.log_path}",
            aux_logs=[submission.log_path],
            **details,
        )
        retried = getattr(job, "restart_times", 0) > job.attempt - 1
        if not retried and not self.workflow.execution_settings.keep_going:
            self.dispatcher.halt()

    def on_withdrawn(self, tickets: list[JobTicket], reason: str) -> None:
        why = {
            "failure": "a job failed; use --keep-going to run independent jobs after a failure",
            "interrupted": "the run was interrupted",
            "deadline": "they could not finish before the allocation ends",
        }.get(reason, reason)
        self.logger.info(f"matensemble: {len(tickets)} queued job(s) were not started ({why}).")
        for ticket in tickets:
            self.journal.ended(ticket.key, "cancelled", "cancelled", reason="not started")
            self.workflow.scheduler.error_callback(ticket.payload.job_info.job)

    def on_tick(self) -> None:
        self.status.report(self.current_status())

    def current_status(self) -> Status:
        return Status(
            queued=len(self.packer.queue),
            running=len(self.packer.running),
            free_cores=self.allocation.free_cores,
            total_cores=self.allocation.total_cores,
            free_gpus=self.allocation.free_gpus,
            total_gpus=self.allocation.total_gpus,
            done=self.status.done,
            failed=self.status.failed,
        )

    def on_crash(self, error: BaseException, tickets: list[JobTicket]) -> None:
        self.workflow.scheduler.executor_error_callback(error)
        for ticket in tickets:
            self.workflow.scheduler.error_callback(ticket.payload.job_info.job)

    # -- signals ----------------------------------------------------------------
    def _install_sigterm_handler(self) -> None:
        """SIGTERM cancels like Ctrl-C: every job is stopped, none left running.

        Snakemake's own handler would wait for running jobs, which for a packer
        holding a queue means starting all of them.
        """
        if self._sigterm_installed or threading.current_thread() is not threading.main_thread():
            return
        self._sigterm_installed = True

        def interrupt(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt(f"received signal {signal.Signals(signum).name}")

        signal.signal(signal.SIGTERM, interrupt)


def _end_event(status: BackendStatus) -> str:
    if status is BackendStatus.SUCCESS:
        return "finished"
    return "cancelled" if status is BackendStatus.CANCELLED else "failed"


def _priority(job: Any) -> int:
    try:
        priority = job.priority
    except Exception:
        return 0
    return priority if isinstance(priority, int) else 0


def _group_resources(job: Any) -> dict[str, Any]:
    """Resources of a group job as one request: all its cores and GPUs, one task."""
    resources = dict(job.resources)
    for per_job_field in ("tasks", "nodes", "cpus_per_task", "gpus_per_task", "mpi"):
        resources.pop(per_job_field, None)
    return resources
