"""Flux jobs a dead Snakemake run left behind: who owns a job, whether its run
is still alive, and what a new run does with it (pure, except reading /proc).

Every job the plugin submits names its owner in the jobspec attribute
``user.snakemake`` (:func:`owner_identity` and the job's own keys: workdir,
Snakemake jobid, rule, name, outputs). At start-up a new run lists the active
jobs of its user in its workdir, reads their owners, and :func:`decide`\\ s:

* ``adopt``: running a job this run needs, whose outputs Snakemake keeps (its
  incomplete markers carry the job's Flux id, which Snakemake ignores under
  ``--rerun-incomplete``); the run re-attaches to it when Snakemake submits
  the job;
* ``cancel``: everything else of a dead run (submitted ahead and never
  started, or running a job whose outputs will be removed and redone); the
  run waits until Flux says it has ended before it submits anything;
* ``wait``: already ending (Flux state CLEANUP): only waited for;
* ``leave``: its run is still alive (never touched).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..orphan_guard import process_start, same_process

#: The jobspec attribute (``attributes.user.snakemake``) naming a job's owner.
OWNER_ATTRIBUTE = "user.snakemake"

ADOPT, CANCEL, WAIT, LEAVE = "adopt", "cancel", "wait", "leave"


def owner_identity(run_id: str) -> dict[str, Any]:
    """Who this process's jobs belong to: the run, and the Snakemake process."""
    pid = os.getpid()
    return {
        "run": run_id,
        "host": socket.gethostname(),
        "pid": pid,
        "pid_started": process_start(pid),
    }


def run_alive(owner: Mapping[str, Any]) -> bool:
    """Whether the Snakemake process that owns a job still runs.

    Only a process on this host can be checked; one on another host counts as
    gone (a new run in the same workdir holds Snakemake's lock, which a living
    run would hold).
    """
    if owner.get("host") != socket.gethostname():
        return False
    return same_process(owner.get("pid"), owner.get("pid_started"))


@dataclass(frozen=True)
class Leftover:
    """An active Flux job of an earlier run in this workdir."""

    jobid: int
    f58: str
    #: Flux state: DEPEND, PRIORITY, SCHED, RUN or CLEANUP
    state: str
    #: the job's ``user.snakemake`` attribute
    owner: Mapping[str, Any] = field(default_factory=dict)
    ranks: tuple[int, ...] = ()
    ncores: int = 0
    ngpus: int = 0
    #: when it started running, epoch seconds (0: not yet)
    t_run: float = 0.0

    @property
    def run(self) -> str:
        return str(self.owner.get("run", "?"))

    @property
    def name(self) -> str:
        return str(self.owner.get("name", "?"))


def is_plugin_job(owner: Any, workdir: str) -> bool:
    """Whether a jobspec's ``user.snakemake`` attribute is the plugin's, in ``workdir``."""
    return isinstance(owner, Mapping) and "run" in owner and owner.get("workdir") == workdir


def decide(leftover: Leftover, resumable: set[int], own_run: str) -> tuple[str, str]:
    """``(action, reason)`` for ``leftover``; ``resumable``: the Flux ids that
    Snakemake's incomplete markers give to jobs this run needs."""
    if leftover.run == own_run:
        return LEAVE, "it is this run's own"
    if run_alive(leftover.owner):
        return LEAVE, f"its snakemake (pid {leftover.owner.get('pid')}) is still alive"
    if leftover.state == "CLEANUP":
        return WAIT, "it is already ending"
    if leftover.state == "RUN" and leftover.jobid in resumable:
        return ADOPT, "it runs a job this run needs, and Snakemake keeps its outputs"
    if leftover.state == "RUN":
        return CANCEL, (
            "Snakemake does not keep its outputs (--rerun-incomplete, or this run "
            "does not need the job): it is redone"
        )
    return CANCEL, "it was submitted ahead and never started"


def describe(leftover: Leftover, action: str, reason: str) -> str:
    """The one log line for a leftover."""
    verb = {
        ADOPT: "adopted",
        CANCEL: "cancelled",
        WAIT: "waited for",
        LEAVE: "left alone",
    }[action]
    return (
        f"matensemble: Flux job {leftover.f58} ({leftover.name}) of the earlier run "
        f"{leftover.run}, {leftover.state}: {verb}, {reason}."
    )
