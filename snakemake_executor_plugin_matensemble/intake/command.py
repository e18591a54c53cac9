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

from ..snakemake_boundary import CapturedProcess, NotDirect
from .naming import rule_of

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


def per_job_reason(job: Any, boundary: Any, direct_enabled: bool) -> str | None:
    """Why ``job`` must run through a per-job Snakemake process (None: it need not).

    Only what is known before the job is prepared; the boundary may still
    refuse a job when it builds the command (:class:`.snakemake_boundary.NotDirect`).
    """
    if not direct_enabled:
        return "the direct path is turned off (--matensemble-per-job-snakemake)"
    if job.is_group():
        return _group_reason(job, boundary)
    return _single_reason(job, boundary)


def _group_reason(group: Any, boundary: Any) -> str | None:
    """Why a group job runs through one Snakemake process (None: members run directly)."""
    for job in group.jobs:
        reason = _single_reason(job, boundary, in_group=True) or _input_dependent(job, boundary)
        if reason is not None:
            return f"its member {job.rule.name} {reason.removeprefix('it ')}"
    return None


def _input_dependent(job: Any, boundary: Any) -> str | None:
    """Params, threads or resources computed from input files, which inside a
    group may be made by an earlier member: those are evaluated when the
    member is ready, so the group runs through Snakemake."""
    params, resources, shell_command = boundary.written_inputs(job)
    values = [*params, resources.get("_cores")]
    if "resources" in shell_command:
        # Snakemake's default resources (mem_mb, disk_mb) are computed from the
        # input's size; they only matter where the command reads them
        values += list(resources.values())
    for value in values:
        if callable(value) and _takes_input(value):
            return "has params, threads or resources computed from its input"
    return None


def _takes_input(function: Any) -> bool:
    try:
        return "input" in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return True  # cannot tell: assume it does


def _single_reason(job: Any, boundary: Any, in_group: bool = False) -> str | None:
    reason = boundary.per_job_because(job)
    if reason is not None:
        return reason
    if str(job.resources.get(OPT_OUT_RESOURCE, 1)).lower() in {"0", "false", "no"}:
        return f"it opts out with resources: {OPT_OUT_RESOURCE}=0"
    if job.benchmark:
        return "it has a benchmark: file"
    if boundary.uses_output_cache(job):
        return "it uses the between-workflow output cache"
    if not in_group and boundary.is_pipe_or_service(job):
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

    Runs in Snakemake's scheduler thread (it touches the job and the DAG).
    ``per_job_command(job, cores)`` is Snakemake's per-job command restricted
    to ``cores``; ``snakemake_work()`` times Snakemake's own per-job work.
    """

    def __init__(
        self,
        boundary: Any,
        per_job_command: Callable[[Any, int], str],
        snakemake_work: Callable[[], AbstractContextManager[None]],
        direct_enabled: bool,
    ):
        self.boundary = boundary
        self.per_job_command = per_job_command
        self.snakemake_work = snakemake_work
        self.direct_enabled = direct_enabled
        self._announced: set[str] = set()

    def build(self, job: Any, cores: int, tasks: int, has_mpi: bool) -> JobCommand:
        reason = per_job_reason(job, self.boundary, self.direct_enabled)
        if reason is None:
            try:
                with self.snakemake_work():
                    if job.is_group():
                        command = self._group_command(job, cores)
                    else:
                        command = self._direct_command(job, per_task=tasks > 1 and not has_mpi)
            except NotDirect as error:
                reason = str(error)
            else:
                self._announce(job, None)
                return command
        self._announce(job, reason)
        return JobCommand(self.per_job_command(job, cores))

    def _direct_command(self, job: Any, per_task: bool) -> JobCommand:
        return _launched_as_is(self.boundary.capture_command(job), per_task)

    def _group_command(self, group: Any, cores: int) -> JobCommand:
        """The members of ``group``, run by :mod:`.group_runner` on the group's
        ``cores`` as Snakemake runs them: each once those it reads from are
        done, as many at once as their threads fit the cores; the members of a
        pipe group together."""
        order = self.boundary.run_order(group)  # before preparing: may raise NotDirect
        alone = len(order) == 1 and len(order[0].jobs) == 1
        if alone and not self.boundary.is_service(order[0].jobs[0]):
            # one member (a rule with group: but nothing to group it with):
            # its own command, with no runner around it
            ((_, process),) = self.boundary.capture_group(group)
            return _launched_as_is(process, per_task=False)
        cleanup, members = [], {}
        services = [job for job in group.jobs if self.boundary.is_service(job)]
        served = {str(f) for job in services for f in job.output}
        base = dict(os.environ)  # the group job's own environment, before the backend's
        for job, process in self.boundary.capture_group(group):
            cleanup.extend(process.cleanup)
            members[job] = {
                "name": f"{job.rule.name} (jobid {job.jobid})",
                "command": process.command,
                "shell": process.executable,
                # what shell() changed, applied on top of the job's environment
                # (which has the backend's GPU and task variables)
                "env": {k: v for k, v in process.env.items() if base.get(k) != v},
                "unset": [k for k in base if k not in process.env],
                "service": job in services,
                "threads": job.threads if isinstance(job.threads, int) else 1,
                # Snakemake starts a service's consumer once the service's
                # output is there (it waits for a job's input before it starts)
                "wait_for": sorted(str(f) for f in job.input if str(f) in served),
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

    def _announce(self, job: Any, reason: str | None) -> None:
        name = rule_of(job)
        if name in self._announced:
            return
        self._announced.add(name)
        if reason is None and job.is_group():
            together = any(self.boundary.is_pipe_or_service(member) for member in job.jobs)
            how = "in order, pipe() and service() members together" if together else "in order"
            log.info(f"matensemble: {name} runs its members' commands directly, {how}.")
        elif reason is None:
            kind = self.boundary.rule_kind(job)
            log.info(f"matensemble: rule {name} ({kind}) runs its command directly.")
        else:
            log.info(f"matensemble: {name} runs through a per-job Snakemake process: {reason}.")
