"""Translate a Snakemake job's resources into a request for the allocation.

Snakemake's standard resource names are used (the same ones the slurm plugin
reads), so a Snakefile written for a cluster runs unchanged:

================  ===========================================================
``threads``       cores per task (rule ``threads:``)
``cpus_per_task`` cores per task (overrides ``threads`` when that is left at 1)
``tasks``         number of tasks (MPI ranks); default 1
``nodes``         number of nodes to spread the tasks over; default: any
``gpu``           GPUs of the whole job (must divide evenly among tasks)
``gpus_per_task`` GPUs per task (alternative to ``gpu``)
``runtime``       walltime in minutes (or a string such as ``"2h"``)
``mpi``           MPI launcher the rule calls itself (``{resources.mpi}``)
``exclusive``     whole nodes for this job
================  ===========================================================

Every value is checked here, before anything runs; a bad value raises
:class:`InvalidRequestError` naming the rule, the field, the value and the fix.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import humanfriendly

from ..errors import InvalidRequestError
from ..packing.resource_request import ResourceRequest

#: Resources that Snakemake itself sets and that need no comment.
SNAKEMAKE_INTERNAL = frozenset({"_cores", "_nodes", "tmpdir", "_job_count"})
#: Resources the backends read.
READ_RESOURCES = frozenset(
    {
        "threads",
        "cpus_per_task",
        "tasks",
        "nodes",
        "gpu",
        "gpus_per_task",
        "runtime",
        "mpi",
        "exclusive",
    }
)
#: Resources that are accepted but not enforced by any backend of this plugin.
UNENFORCED_RESOURCES = frozenset({"mem_mb", "mem_mib", "mem", "disk_mb", "disk_mib", "disk"})
#: Names users often write when they mean one of the read resources.
CONFUSABLE_RESOURCES: Mapping[str, str] = {
    "gpus": "gpu",
    "ngpus": "gpu",
    "num_gpus": "gpu",
    "cores": "threads",
    "cpus": "threads",
    "ntasks": "tasks",
    "num_tasks": "tasks",
    "ranks": "tasks",
    "num_nodes": "nodes",
    "walltime": "runtime",
    "time": "runtime",
    "time_min": "runtime",
}


class _Fields:
    """Reads and checks the fields of one job, raising errors that say where."""

    def __init__(self, where: str | Callable[[], str], rule: str, resources: Mapping[str, Any]):
        self.where = where
        self.rule = rule
        self.resources = resources

    def fail(self, field: str, value: object, problem: str, fix: str | None = None):
        where = self.where() if callable(self.where) else self.where
        raise InvalidRequestError(where, field, value, problem, fix or self.set_fix(field))

    def set_fix(self, field: str, example: str = "N") -> str:
        if field == "threads":
            return (
                f"set 'threads: {example}' in rule '{self.rule}' "
                f"or pass --set-threads {self.rule}={example}"
            )
        return (
            f"set '{field}={example}' under resources: of rule '{self.rule}' "
            f"or pass --set-resources {self.rule}:{field}={example}"
        )

    def positive_int(self, field: str, value: Any, minimum: int = 1) -> int:
        number = _whole_number(value)
        if number is None:
            self.fail(field, value, "is not a whole number")
        if number < minimum:
            self.fail(field, value, f"must be at least {minimum}")
        return number

    def optional_int(self, field: str, minimum: int = 1) -> int | None:
        value = self.resources.get(field)
        if value is None:
            return None
        return self.positive_int(field, value, minimum)


def _whole_number(value: Any) -> int | None:
    """``value`` as an int if it is a whole number (not a bool), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("+-").isdigit():
            return int(text)
    return None


def parse_walltime_seconds(fields: _Fields, value: Any) -> int | None:
    """Snakemake's ``runtime`` (minutes, or a human-friendly string) in seconds."""
    if value is None:
        return None
    if isinstance(value, bool):
        fields.fail("runtime", value, "is not a duration")
    if isinstance(value, int | float):
        minutes = float(value)
    else:
        text = str(value).strip()
        try:
            minutes = float(text)
        except ValueError:
            try:
                minutes = humanfriendly.parse_timespan(text) / 60.0
            except humanfriendly.InvalidTimespan:
                fields.fail(
                    "runtime",
                    value,
                    "is not a duration",
                    "give minutes as a number (runtime=90) or a string such as "
                    f"'1.5h' in rule '{fields.rule}'",
                )
    if not math.isfinite(minutes) or minutes <= 0:
        fields.fail("runtime", value, "must be a positive number of minutes")
    return max(1, round(minutes * 60))


def _parse_bool(fields: _Fields, field: str, value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    fields.fail(
        field, value, "is not true or false", f"use {field}=True or False in rule '{fields.rule}'"
    )
    raise AssertionError  # unreachable


def _cores_per_task(fields: _Fields, threads: Any) -> tuple[int, str]:
    """Cores of one task. ``threads: 0`` is Snakemake's (its local executor runs
    such a job with ``{threads}`` = 0, using no cores of ``--cores``); the job's
    process still runs on a core, so it is placed on one."""
    threads_n = fields.positive_int("threads", threads, minimum=0)
    cpus = fields.optional_int("cpus_per_task")
    if cpus is None:
        return max(1, threads_n), "threads"
    if threads_n not in (0, 1, cpus):
        fields.fail(
            "cpus_per_task",
            cpus,
            f"conflicts with threads={threads_n}: both give the cores of one task",
            f"give rule '{fields.rule}' only one of them, or make them equal",
        )
    return cpus, "cpus_per_task"


def _gpus_per_task(fields: _Fields, tasks: int) -> tuple[int, str]:
    total = fields.optional_int("gpu", minimum=0)
    per_task = fields.optional_int("gpus_per_task", minimum=0)
    if per_task is not None:
        if total is not None and total != per_task * tasks:
            fields.fail(
                "gpu",
                total,
                f"conflicts with gpus_per_task={per_task} x tasks={tasks}",
                f"give rule '{fields.rule}' only one of gpu and gpus_per_task",
            )
        return per_task, "gpus_per_task"
    if total is None:
        return 0, "gpu"
    if total % tasks:
        fields.fail(
            "gpu",
            total,
            f"cannot be split evenly among tasks={tasks}",
            f"make gpu a multiple of tasks in rule '{fields.rule}' "
            "(gpu is the total of the job), or set gpus_per_task instead",
        )
    return total // tasks, "gpu"


def _mpi(fields: _Fields) -> str | None:
    value = fields.resources.get("mpi")
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        fields.fail(
            "mpi",
            value,
            "is not the name of an MPI launcher",
            f"set mpi='mpiexec' (or 'srun', 'flux run') in rule '{fields.rule}'",
        )
    return value.strip()


def request_from_resources(
    where: str | Callable[[], str], rule: str, threads: Any, resources: Mapping[str, Any]
) -> ResourceRequest:
    """Build and check the request of one job from its threads and resources.

    ``where`` names the job in error messages (or makes that name when called,
    so that it costs nothing when all is well), ``rule`` is the rule name used
    in the suggested fix.
    """
    fields = _Fields(where, rule, resources)
    cores_per_task, cores_field = _cores_per_task(fields, threads)
    tasks = fields.optional_int("tasks") or 1
    nodes = fields.optional_int("nodes")
    if nodes is not None and nodes > tasks:
        fields.fail(
            "nodes",
            nodes,
            f"is more than tasks={tasks}: every node needs at least one task",
            f"set tasks to at least {nodes} in rule '{rule}', or lower nodes",
        )
    gpus_per_task, gpus_field = _gpus_per_task(fields, tasks)
    return ResourceRequest(
        tasks=tasks,
        cores_per_task=cores_per_task,
        gpus_per_task=gpus_per_task,
        nodes=nodes,
        exclusive=_parse_bool(fields, "exclusive", resources.get("exclusive")),
        walltime_s=parse_walltime_seconds(fields, resources.get("runtime")),
        mpi=_mpi(fields),
        cores_field=cores_field,
        gpus_field=gpus_field,
    )


def unread_resources(resources: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """Resource names the plugin will not enforce, and likely misspellings.

    Returns ``(unenforced, confusable)``; callers report each once.
    """
    unenforced = sorted(name for name in resources if name in UNENFORCED_RESOURCES)
    confusable = sorted(name for name in resources if name in CONFUSABLE_RESOURCES)
    return unenforced, confusable
