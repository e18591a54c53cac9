"""A Snakemake job as the plugin sees it: read once at intake, then frozen.

:class:`JobRecord` is what the rest of the plugin (request, command, names,
packer, observer, journal) knows of a job; only the boundary and the
executor's calls back into Snakemake use the Snakemake job it keeps
(:attr:`JobRecord.job`). :class:`DirectFacts` is what decides whether the job
can run directly: read with the record where the direct path is on, left out
where it is off or where only the request is checked (the up-front check).

Some values are read later on purpose, through the boundary, because
Snakemake evaluates them late: a group member's resources and threads (its
input may be made by an earlier member), a group's run order and temp files
(only on the direct path, and they may refuse it).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class DirectFacts:
    """What decides a single job's path, as the boundary read it."""

    #: why the job must run per job from what it is (``run:``, shadow,
    #: handover, storage, no command, facts unknown here); None: nothing of that
    per_job_because: str | None
    #: ``shell``, ``script``, ``notebook``, ``wrapper``, ... (``unknown``: not known here)
    kind: str
    pipe: bool
    service: bool
    #: the job has a ``benchmark:`` file
    benchmark: bool
    #: the rule's output goes through the between-workflow cache (or the cache is unknown here)
    output_cache: bool
    #: the rule's params, resources and ``shell:`` command as written (values or functions)
    written_params: tuple[Any, ...] = ()
    written_resources: Any = field(default_factory=dict)
    written_shell: str = ""


@dataclass(frozen=True, slots=True, eq=False)
class JobRecord:
    """One Snakemake job (or group job), read once."""

    #: Snakemake's job: only for the boundary and the executor's calls back into Snakemake
    job: Any = field(repr=False, compare=False)
    jobid: str
    #: the rule's name; a group's own name (``group NAME`` or ``group of rules a, b``)
    rule: str
    attempt: int
    #: a single job's wildcards ({} for a group, or where unknown here)
    wildcards: Mapping[str, str] = field(default_factory=dict)
    #: the group's id (None: a single job)
    groupid: str | None = None
    #: the rule names of a group's members, sorted, distinct (a single job: its own)
    rules: tuple[str, ...] = ()
    #: threads and resources (a group's as Snakemake layers them for one node);
    #: None: not read (a group's member, whose values Snakemake evaluates late)
    threads: Any = None
    resources: Mapping[str, Any] | None = None
    #: Snakemake's ``priority`` (0 where unknown or not a number)
    priority: int = 0
    #: how often Snakemake retries the job after a failure (0 where unknown)
    restart_times: int = 0
    #: input files (read for a group's members only: a service's consumer waits for them)
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    #: what decides its path (None: not read, the direct path is off or not asked)
    direct: DirectFacts | None = None
    #: a group's members in Snakemake's topological order (``group.toposorted``)
    members: tuple[JobRecord, ...] = ()

    @property
    def is_group(self) -> bool:
        return self.groupid is not None

    @property
    def retried(self) -> bool:
        """Snakemake retries the job after this attempt fails."""
        return self.restart_times > self.attempt - 1

    @property
    def identity(self) -> tuple[str, int]:
        """``(jobid, attempt)``: one attempt of one job."""
        return self.jobid, self.attempt


def group_name(groupid: str, rules: tuple[str, ...]) -> str:
    """``group NAME`` for a group the workflow names; ``group of rules a, b``
    for the groups Snakemake makes itself (pipe groups, with a random id)."""
    try:
        uuid.UUID(groupid)
    except ValueError:
        return f"group {groupid}"
    return "group of rules " + ", ".join(rules)
