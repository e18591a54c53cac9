"""Intake: one Snakemake job in, one checked ticket for the packer out.

The job is read once, by the boundary, into a frozen
:class:`~.snakemake_boundary.JobRecord`; everything the plugin derives from it
is made here from that record, in Snakemake's scheduler thread: the checked
resource request, the command (direct or per-job Snakemake), the display
name and log path, and the ticket the packer queues. Bad input raises
:class:`.errors.InvalidRequestError` with the rule, the field, the value and
the fix.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..backends.base import Backend, LaunchSpec, RunningJob
from ..errors import InvalidRequestError, JobsCannotRunError
from ..packing.allocation import Allocation
from ..packing.queue import JobTicket
from ..snakemake_boundary import JobRecord, SnakemakeBoundary, is_unknown_yet
from . import naming
from .command import CommandBuilder, CommandPath, JobCommand
from .request import (
    CONFUSABLE_RESOURCES,
    ResourceRequest,
    request_from_resources,
    unread_resources,
)

log = logging.getLogger("snakemake.logging.matensemble.intake")

#: Fields of a group's resources that describe one member, not the group.
_PER_MEMBER_FIELDS = ("tasks", "nodes", "cpus_per_task", "gpus_per_task", "mpi")


#: The executor's report of a submission to Snakemake: ``(record, backend id
#: of a re-attached job, log path)`` -> Snakemake's ``SubmittedJobInfo``.
ReportSubmission = Callable[[JobRecord, "str | None", str], Any]


@dataclass
class Submission:
    """What the dispatcher and the observer need of one Snakemake job."""

    record: JobRecord
    #: Snakemake's ``SubmittedJobInfo`` (the executor's reports to Snakemake)
    job_info: Any
    command: JobCommand
    #: ``rule[wildcards]`` (backend job names, messages)
    name: str
    #: the plugin's log of this job and attempt
    log_path: str


class Intake:
    """Turns Snakemake jobs into tickets (Snakemake's scheduler thread only)."""

    def __init__(
        self,
        boundary: SnakemakeBoundary,
        allocation: Allocation,
        backend: Backend,
        commands: CommandBuilder,
        log_dir: str,
        snakemake_work: Callable[[], Any],
        base_env: Mapping[str, str],
    ):
        self.boundary = boundary
        self.allocation = allocation
        self.backend = backend
        self.commands = commands
        self.log_dir = log_dir
        self.snakemake_work = snakemake_work
        #: the environment of per-job Snakemake commands (direct ones carry their own)
        self.base_env = dict(base_env)
        #: where jobs run: Snakemake's working directory
        self.workdir = os.getcwd()
        self._keys = itertools.count(1)
        self._noted: set[tuple[str, str]] = set()

    @property
    def node_cores(self) -> int:
        """The cores of the allocation's largest node."""
        return max(len(spec.cores) for spec in self.allocation.specs)

    # -- requests ----------------------------------------------------------------
    def record(self, job: Any) -> JobRecord:
        """``job``, handed over by Snakemake and ready, read once (the boundary)."""
        return self.boundary.record(job, self.node_cores, direct=self.commands.direct_enabled)

    def request_for(self, record: JobRecord, *, known_only: bool = False) -> ResourceRequest:
        """The checked request of ``record``; raises :class:`InvalidRequestError`.

        ``known_only``: leave out values Snakemake evaluates later (``<TBD>``,
        e.g. resources that depend on inputs not made yet); they are checked
        when the job is ready, before it starts.
        """
        rule = record.rule
        resources = record.resources or {}
        threads = record.threads
        if record.is_group:
            resources = {k: v for k, v in resources.items() if k not in _PER_MEMBER_FIELDS}
            threads = min(threads, self.node_cores) if isinstance(threads, int) else threads
        if known_only:
            resources = {k: v for k, v in resources.items() if not is_unknown_yet(v)}
            threads = 1 if is_unknown_yet(threads) else threads
        self._note_unread(rule, resources)
        request = request_from_resources(lambda: naming.where(record), rule, threads, resources)
        problem = self.allocation.why_never_fits(request)
        if problem is not None:
            field, value, text = problem
            raise InvalidRequestError(
                naming.where(record),
                field,
                value,
                f"{text}; the job could never start",
                f"lower {field} of {rule}, or run in a larger allocation",
            )
        return request

    def check_up_front(self, jobs: list[Any] | None) -> None:
        """Lower threads to one node, as ``--cores`` would, then check every job
        of the DAG (None: Snakemake cannot list them); raises
        :class:`.errors.JobsCannotRunError` naming each rule that is certainly wrong."""
        node_cores = self.node_cores
        lowered = self.boundary.limit_threads(node_cores, jobs or [])
        if lowered:
            log.info(
                f"matensemble: threads lowered to {node_cores}, the cores of the largest "
                "node, as Snakemake's --cores lowers them: "
                + ", ".join(f"{rule} (threads: {n})" for rule, n in sorted(lowered.items()))
                + "."
            )
        problems = self.check_all(jobs) if jobs is not None else {}
        if problems:
            raise JobsCannotRunError(list(problems.values()))

    def check_all(self, jobs: list[Any]) -> dict[str, str]:
        """Check ``jobs`` up front: ``{rule: message}`` for every rule that is
        certainly wrong (values not known yet are checked later)."""
        problems: dict[str, str] = {}
        for rule, record in self.boundary.records_read_early(jobs, self.node_cores, problems):
            if isinstance(record, Exception):  # resources that need inputs not made yet
                log.debug(f"matensemble: cannot check a job of {rule} yet: {record}")
                continue
            try:
                self.request_for(record, known_only=True)
            except InvalidRequestError as error:
                problems[rule] = str(error)
            except Exception as error:  # values that need inputs not made yet
                log.debug(f"matensemble: cannot check {naming.where(record)} yet: {error}")
        return problems

    # -- tickets -------------------------------------------------------------------
    def ticket_for(
        self, record: JobRecord, report_submission: ReportSubmission
    ) -> JobTicket[Submission]:
        """The ticket of a ready job; raises on bad input (nothing started)."""
        request = self.request_for(record)
        log_path = str(naming.log_path(self.log_dir, record))
        running = self._still_running(record)
        if running is None:
            command = self.commands.build(
                record, request.total_cores, request.tasks, has_mpi=request.mpi is not None
            )
        else:  # re-attach: nothing to prepare or launch, outputs are being written
            command = JobCommand(command="", path=CommandPath.ATTACHED)
        # registers the incomplete markers (keeping a re-attached job's id)
        with self.snakemake_work():
            job_info = report_submission(record, running.backend_id if running else None, log_path)
        submission = Submission(
            record=record,
            job_info=job_info,
            command=command,
            name=naming.display_name(record),
            log_path=log_path,
        )
        return JobTicket(
            key=self.new_key(),
            rule=record.rule,
            request=request,
            priority=record.priority,
            payload=submission,
            attach=running,
        )

    def launch_spec(self, ticket: JobTicket[Submission]) -> LaunchSpec:
        """What the backend needs to start ``ticket`` (dispatcher thread)."""
        submission = ticket.payload
        assert submission is not None
        command = submission.command
        direct = command.path is CommandPath.DIRECT
        env = command.env if direct else {**self.base_env, **command.env}
        return LaunchSpec(
            key=ticket.key,
            command=command.command,
            name=submission.name,
            cwd=self.workdir,
            env=env,
            log_path=submission.log_path,
            request=ticket.request,
            shell=command.shell,
            per_task=command.per_task,
            priority=ticket.priority,
            attributes={
                "workdir": self.workdir,
                "jobid": submission.record.jobid,
                "rule": ticket.rule,
                "outputs": list(submission.record.outputs),
            },
        )

    def new_key(self) -> int:
        """A key for the journal and the packer, unique within the run."""
        return next(self._keys)

    def resumable_ids(self) -> set[str]:
        """The backend ids that an earlier, killed run recorded in the incomplete
        markers of jobs this run needs (Snakemake gives none under
        --rerun-incomplete): the only jobs the backend may re-attach to."""
        if not self.backend.can_attach:
            return set()
        return self.boundary.recorded_external_jobids()

    def _still_running(self, record: JobRecord) -> RunningJob | None:
        """The backend job an earlier, killed run started for the job, if it runs."""
        if not self.backend.can_attach:
            return None
        external = self.boundary.incomplete_external_jobid(record)
        if not external:
            return None
        return self.backend.find_running(external)

    def _note_unread(self, rule: str, resources: Mapping[str, Any]) -> None:
        unenforced, confusable = unread_resources(resources)
        for name in confusable:
            if (rule, name) not in self._noted:
                self._noted.add((rule, name))
                log.warning(
                    f"matensemble: {rule} sets resource '{name}', which this executor "
                    f"does not read; did you mean '{CONFUSABLE_RESOURCES[name]}'?"
                )
        for name in unenforced:
            if ("*", name) not in self._noted:
                self._noted.add(("*", name))
                log.info(
                    f"matensemble: resource '{name}' is accepted but not enforced "
                    f"by the {self.backend.name} backend (memory and disk are not "
                    "limited per job)."
                )
