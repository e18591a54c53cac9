"""Starting a child instance as a job of the enclosing instance.

A child is ``flux start sleep inf`` run as one broker per node, each under
:mod:`.keeper` (which leaves no process of the child behind), over whole
(exclusive) nodes of the enclosing instance, pinned to the ranks of its group,
as ``flux batch``/``flux alloc`` start theirs. Its walltime is what is left of
the enclosing allocation, so it ends inside it; when one of its brokers dies
the keepers end the whole child, so that a child is either whole or gone.
The scheduler is chosen by the broker's module alternatives
(``FLUX_MODPROBE_DISABLE``), no file needed on the child's nodes.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..leftovers import OWNER_ATTRIBUTE
from . import keeper
from .groups import idset

Scheduler = Literal["simple", "fluxion"]
SCHEDULERS: tuple[str, ...] = ("simple", "fluxion")
FLUXION_MODULES = "sched-fluxion-qmanager,sched-fluxion-resource,sched-fluxion-feasibility"
#: Seconds a child ends before the enclosing allocation does (its brokers shut down).
END_MARGIN_S = 30.0
#: Environment a child's brokers must not inherit from this process.
PARENT_ONLY_ENV = ("FLUX_URI", "FLUX_SSH", "FLUX_KVS_NAMESPACE", "FLUX_MODPROBE_DISABLE")
JOB_NAME_PREFIX = "matensemble-child-"
#: Each broker runs under the keeper (by path: it needs the standard library only).
KEEPER_FILE = Path(keeper.__file__)


@dataclass(frozen=True)
class ChildPlan:
    """One child to start: its name, the enclosing ranks it owns, its scheduler."""

    name: str
    ranks: tuple[int, ...]
    scheduler: Scheduler = "simple"

    def __post_init__(self) -> None:
        if not self.ranks:
            raise ValueError(f"child {self.name!r} has no ranks")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(
                f"child scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}"
            )


def choose_scheduler(rset: dict[str, Any]) -> Scheduler:
    """``simple`` (measured faster for packed one-node jobs, docs/backends.md) unless
    the nodes have GPUs: sched-simple does not schedule GPUs, Fluxion does."""
    for entry in rset.get("execution", {}).get("R_lite", []):
        if entry.get("children", {}).get("gpu"):
            return "fluxion"
    return "simple"


def enclosing_rset(handle: Any) -> dict[str, Any]:
    """The enclosing instance's R."""
    import flux.kvs

    rset = flux.kvs.get(handle, "resource.R")
    return json.loads(rset) if isinstance(rset, str) else rset


def remaining_seconds(expiration: float, now: float | None = None) -> float:
    """A child's walltime from the enclosing instance's expiration (0: none)."""
    if not expiration or expiration <= 0 or expiration > 2**40:
        return 0.0
    left = expiration - (time.time() if now is None else now) - END_MARGIN_S
    if left < 1:
        raise ValueError(
            f"the enclosing allocation ends in {expiration - (now or time.time()):.0f} s: "
            f"too little to start a child instance (needs > {END_MARGIN_S:.0f} s)"
        )
    return float(math.floor(left))


def expiration_of(rset: dict[str, Any]) -> float:
    """An R's expiration (epoch seconds; 0 when unlimited)."""
    return float(rset.get("execution", {}).get("expiration", 0) or 0)


def child_environment(scheduler: Scheduler, environ: dict[str, str]) -> dict[str, str]:
    env = {key: value for key, value in environ.items() if key not in PARENT_ONLY_ENV}
    if scheduler == "simple":
        env["FLUX_MODPROBE_DISABLE"] = FLUXION_MODULES
    return env


def child_jobspec(
    plan: ChildPlan,
    duration_s: float,
    cwd: str | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> Any:
    """The ``JobspecV1`` of ``plan``'s brokers (one per node, whole nodes);
    ``attributes`` (the run's owner identity) go to ``user.snakemake`` with
    ``child``: the child's name."""
    import flux.job

    nodes = len(plan.ranks)
    jobspec = flux.job.JobspecV1.from_command(
        [sys.executable, str(KEEPER_FILE), "flux", "start", "sleep", "inf"],
        num_tasks=nodes,
        num_nodes=nodes,
        cores_per_task=1,
        exclusive=True,
    )
    jobspec.cwd = cwd or os.getcwd()
    jobspec.environment = child_environment(plan.scheduler, dict(os.environ))
    jobspec.duration = duration_s
    jobspec.setattr("system.job.name", JOB_NAME_PREFIX + plan.name)
    jobspec.setattr("system.constraints", {"ranks": [idset(plan.ranks)]})
    if attributes is not None:
        jobspec.setattr(OWNER_ATTRIBUTE, {**dict(attributes), "child": plan.name})
    return jobspec


def submit_children(
    handle: Any,
    plans: Sequence[ChildPlan],
    duration_s: float,
    attributes: Mapping[str, Any] | None = None,
) -> list[int]:
    """Submit every plan's child (pipelined); their jobids in plan order."""
    import flux.job

    futures = [
        flux.job.submit_async(
            handle, child_jobspec(plan, duration_s, attributes=attributes), waitable=False
        )
        for plan in plans
    ]
    return [int(future.get_id()) for future in futures]
