"""The command line a backend runs for one Snakemake job.

Two paths:

* **direct** (``shell:``, ``script:``, ``notebook:``, ``wrapper:`` rules,
  with or without conda/apptainer/env-modules): Snakemake's own code prepares
  the job and builds the one process its local executor would start (see
  :mod:`.snakemake_boundary`); the backend launches that process on the job's
  cores and GPUs. No Snakemake process per job.
* **snakemake** (everything else, and whatever the boundary cannot capture):
  Snakemake's standard remote job command (``python -m snakemake
  --target-jobs ... --mode remote``), restricted to the cores the packer gave
  it (``--cores N`` instead of Snakemake's ``all``).

Snakemake's checks after the job (outputs present, touch, temp, protected,
metadata, retries, checkpoints) run in the main process for both paths.
"""

from __future__ import annotations

import enum
import inspect
import json
import logging
import os
import shlex
import sys
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from ..snakemake_boundary import CapturedProcess, JobRecord, NotDirect

log = logging.getLogger("snakemake.logging.matensemble.command")

#: The script that runs a group's members inside its packed job.
GROUP_RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "group_runner.py")

#: Resource a rule sets to 0 to always run through a per-job Snakemake process.
OPT_OUT_RESOURCE = "matensemble_direct"


class CommandPath(enum.StrEnum):
    """Which path a job takes."""

    #: the rule's own process, as Snakemake's shell() would start it
    DIRECT = "direct"
    #: Snakemake's per-job command (one Snakemake process for the job)
    SNAKEMAKE = "snakemake"
    #: nothing to run: a job an earlier run started, still running, re-attached
    ATTACHED = "attached"


@dataclass(frozen=True)
class JobCommand:
    """A shell command line, the shell that runs it and what it needs."""

    command: str
    shell: str = "/bin/sh"
    path: CommandPath = CommandPath.SNAKEMAKE
    #: The job's environment: complete on the direct path (as shell() built
    #: it), or variables added to the run's environment on the snakemake path.
    env: dict[str, str] = field(default_factory=dict)
    #: Launch the command once per task (direct path, tasks > 1, no ``mpi``).
    per_task: bool = False
    #: Files to remove when the job has ended.
    cleanup: tuple[str, ...] = ()


def per_job_reason(record: JobRecord, boundary: Any, direct_enabled: bool) -> str | None:
    """Why the job must run through a per-job Snakemake process (None: it need not).

    Only what is known before the job is prepared; the boundary may still
    refuse a job when it builds the command (:class:`.snakemake_boundary.NotDirect`).
    """
    if not direct_enabled:
        return "the direct path is turned off (--matensemble-per-job-snakemake)"
    if record.is_group:
        return _group_reason(record, boundary)
    return _single_reason(record, record.resources)


def _group_reason(group: JobRecord, boundary: Any) -> str | None:
    """Why a group job runs through one Snakemake process (None: members run directly)."""
    for member in group.members:
        reason = _single_reason(
            member, lambda m=member: boundary.member_resources(m), in_group=True
        ) or _input_dependent(member)
        if reason is not None:
            return f"its member {member.rule} {reason.removeprefix('it ')}"
    return None


def _input_dependent(member: JobRecord) -> str | None:
    """Params, threads or resources computed from input files, which inside a
    group may be made by an earlier member: those are evaluated when the
    member is ready, so the group runs through Snakemake."""
    facts = member.direct
    values = [*facts.written_params, facts.written_resources.get("_cores")]
    if "resources" in facts.written_shell:
        # Snakemake's default resources (mem_mb, disk_mb) are computed from the
        # input's size; they only matter where the command reads them
        values += list(facts.written_resources.values())
    for value in values:
        if callable(value) and _takes_input(value):
            return "has params, threads or resources computed from its input"
    return None


def _takes_input(function: Any) -> bool:
    try:
        return "input" in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return True  # cannot tell: assume it does


def _single_reason(record: JobRecord, resources: Any, in_group: bool = False) -> str | None:
    """``resources``: the job's resources, or (a group's member) a function that
    evaluates them, called only when they are needed, as Snakemake would."""
    facts = record.direct
    if facts.per_job_because is not None:
        return facts.per_job_because
    if callable(resources):
        resources = resources()
    if str(resources.get(OPT_OUT_RESOURCE, 1)).lower() in {"0", "false", "no"}:
        return f"it opts out with resources: {OPT_OUT_RESOURCE}=0"
    if facts.benchmark:
        return "it has a benchmark: file"
    if facts.output_cache:
        return "it uses the between-workflow output cache"
    if not in_group and (facts.pipe or facts.service):
        # Snakemake groups every pipe group; a lone one is unexpected
        return "it has pipe or service outputs"
    return None


def _launched_as_is(process: CapturedProcess, per_task: bool) -> JobCommand:
    """The process ``shell()`` would have started, as the backend starts it."""
    return JobCommand(
        command=process.command,
        shell=process.executable,
        path=CommandPath.DIRECT,
        env=process.env,
        per_task=per_task,
        cleanup=tuple(process.cleanup),
    )


class CommandBuilder:
    """Chooses the path for each job and builds its command.

    Runs in Snakemake's scheduler thread (the boundary prepares the job there).
    ``per_job_command(record, cores)`` is Snakemake's per-job command restricted
    to ``cores``; ``snakemake_work()`` times Snakemake's own per-job work.
    """

    def __init__(
        self,
        boundary: Any,
        per_job_command: Callable[[JobRecord, int], str],
        snakemake_work: Callable[[], AbstractContextManager[None]],
        direct_enabled: bool,
    ):
        self.boundary = boundary
        self.per_job_command = per_job_command
        self.snakemake_work = snakemake_work
        self.direct_enabled = direct_enabled
        self._announced: set[str] = set()

    def build(self, record: JobRecord, cores: int, tasks: int, has_mpi: bool) -> JobCommand:
        reason = per_job_reason(record, self.boundary, self.direct_enabled)
        if reason is None:
            try:
                with self.snakemake_work():
                    if record.is_group:
                        command = self._group_command(record, cores)
                    else:
                        command = self._direct_command(record, per_task=tasks > 1 and not has_mpi)
            except NotDirect as error:
                reason = str(error)
            else:
                self._announce(record, None)
                return command
        self._announce(record, reason)
        return JobCommand(self.per_job_command(record, cores))

    def _direct_command(self, record: JobRecord, per_task: bool) -> JobCommand:
        return _launched_as_is(self.boundary.capture_command(record), per_task)

    def _group_command(self, group: JobRecord, cores: int) -> JobCommand:
        """The members of ``group``, run by :mod:`.group_runner` on the group's
        ``cores`` as Snakemake runs them: each once those it reads from are
        done, as many at once as their threads fit the cores; the members of a
        pipe group together."""
        order = self.boundary.run_order(group)  # before preparing: may raise NotDirect
        alone = len(order) == 1 and len(order[0].jobs) == 1
        if alone and not order[0].jobs[0].direct.service:
            # one member (a rule with group: but nothing to group it with):
            # its own command, with no runner around it
            ((_, process),) = self.boundary.capture_group(group)
            return _launched_as_is(process, per_task=False)
        cleanup, members = [], {}
        served = {path for job in group.members if job.direct.service for path in job.outputs}
        base = dict(os.environ)  # the group job's own environment, before the backend's
        for job, process in self.boundary.capture_group(group):
            cleanup.extend(process.cleanup)
            threads = self.boundary.member_threads(job)
            members[job] = {
                "name": f"{job.rule} (jobid {job.jobid})",
                "command": process.command,
                "shell": process.executable,
                # what shell() changed, applied on top of the job's environment
                # (which has the backend's GPU and task variables)
                "env": {k: v for k, v in process.env.items() if base.get(k) != v},
                "unset": [k for k in base if k not in process.env],
                "service": job.direct.service,
                "threads": threads if isinstance(threads, int) else 1,
                # Snakemake starts a service's consumer once the service's
                # output is there (it waits for a job's input before it starts)
                "wait_for": sorted(path for path in job.inputs if path in served),
            }
        sets = [
            {"members": [members[job] for job in run_set.jobs], "after": list(run_set.after)}
            for run_set in order
        ]
        temp = [
            {"path": path, "after": [members[job]["name"] for job in jobs]}
            for path, jobs in self.boundary.group_temp_files(group)
        ]
        os.makedirs(".snakemake", exist_ok=True)
        handle, spec = tempfile.mkstemp(
            dir=".snakemake", prefix="matensemble_group.", suffix=".json"
        )
        with os.fdopen(handle, "w") as stream:
            latency_wait = self.boundary.latency_wait()
            json.dump(
                {"sets": sets, "cores": cores, "latency_wait": latency_wait, "temp": temp},
                stream,
            )
        spec = os.path.abspath(spec)
        return JobCommand(
            command=shlex.join([sys.executable, GROUP_RUNNER, spec]),
            shell="/bin/sh",
            path=CommandPath.DIRECT,
            env=dict(os.environ),
            cleanup=(*cleanup, spec),
        )

    def _announce(self, record: JobRecord, reason: str | None) -> None:
        name = record.rule
        if name in self._announced:
            return
        self._announced.add(name)
        if reason is None and record.is_group:
            together = any(m.direct.pipe or m.direct.service for m in record.members)
            how = "in order, pipe() and service() members together" if together else "in order"
            log.info(f"matensemble: {name} runs its members' commands directly, {how}.")
        elif reason is None:
            kind = record.direct.kind
            log.info(f"matensemble: rule {name} ({kind}) runs its command directly.")
        else:
            log.info(f"matensemble: {name} runs through a per-job Snakemake process: {reason}.")
