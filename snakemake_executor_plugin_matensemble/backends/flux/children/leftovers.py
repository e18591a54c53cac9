"""Child instances that dead runs left in the enclosing instance: found and
ended before this run starts its own children or any job.

A run's children are jobs of the enclosing instance whose jobspec carries the
run's owner identity with ``child``: the child's name (``user.snakemake``,
:func:`~.launch.child_jobspec`), in the run's workdir. When Snakemake is
killed (``kill -9``) its children live on until their walltime, with the jobs
the dead run had started in them. A restarted run cancels every such child
whose run is dead, and waits until Flux says each is inactive (cancelling a
child SIGTERMs its keepers, which stop the broker and kill every process of the
child on their nodes, jobs included), before it submits anything: no job of a
dead run's child runs beside its rerun, and none is left running.

The jobs of a dead run's children are never adopted (their Snakemake jobs are
rerun, see docs/backends.md, "Child instances"); only the enclosing instance's
leftovers are (:mod:`..adoption`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ....errors import BackendUnavailableError
from ..adoption import _owner, _sigint_handler_kept
from ..leftovers import run_alive

log = logging.getLogger("snakemake.logging.matensemble.flux")

#: Seconds between two looks at whether cancelled children have ended.
POLL_S = 0.1


@dataclass(frozen=True)
class LeftoverChild:
    """An active child instance of an earlier run in this workdir."""

    jobid: int
    f58: str
    #: Flux state: DEPEND, PRIORITY, SCHED, RUN or CLEANUP
    state: str
    #: the child job's ``user.snakemake`` attribute
    owner: Mapping[str, Any]

    @property
    def run(self) -> str:
        return str(self.owner.get("run", "?"))

    @property
    def name(self) -> str:
        return str(self.owner.get("child", "?"))


def is_child_job(owner: Any) -> bool:
    """Whether a jobspec's ``user.snakemake`` attribute is that of a run's child."""
    return isinstance(owner, Mapping) and "run" in owner and "child" in owner


def must_end(child: LeftoverChild, own_run: str) -> str | None:
    """Why ``child`` must be ended before this run starts (None: leave it)."""
    if child.run == own_run or run_alive(child.owner):
        return None
    if child.state == "CLEANUP":
        return "it is already ending"
    return "its snakemake is dead; the jobs that ran in it are rerun, not adopted"


def find_leftover_children(flux: Any, handle: Any, workdir: str) -> list[LeftoverChild]:
    """The active child jobs in ``workdir`` of this user: ONE ``job-list`` query,
    the owners of those in ``workdir`` in one pipelined lookup."""
    with _sigint_handler_kept():
        jobs = flux.job.JobList(
            handle, max_entries=0, filters=["pending", "running"], attrs=["state", "cwd"]
        ).jobs()
    here = [job for job in jobs if getattr(job, "cwd", None) == workdir]
    if not here:
        return []
    with _sigint_handler_kept():
        found = flux.job.JobKVSLookup(handle, ids=[job.id for job in here]).data()
    owners = {int(d["id"]): _owner(d.get("jobspec")) for d in found if isinstance(d, dict)}
    return [
        LeftoverChild(int(job.id), job.id.f58, str(job.state), owners[int(job.id)])
        for job in here
        if is_child_job(owners.get(int(job.id)))
    ]


def end_leftover_children(
    flux: Any, handle: Any, workdir: str, own_run: str, timeout: float
) -> list[LeftoverChild]:
    """Cancel the children that dead runs left in ``workdir`` and wait until
    Flux lists none of them as active; the children ended (each said once).

    Raises :class:`BackendUnavailableError` if they cannot be listed or do not
    end within ``timeout`` seconds (nothing of this run was started then).
    """
    try:
        leftovers = find_leftover_children(flux, handle, workdir)
    except (OSError, AttributeError, TypeError, ValueError) as error:
        raise BackendUnavailableError(
            "matensemble: could not list the child Flux instances that earlier snakemake "
            f"runs may have left in this directory ({error!r}); nothing was started, so "
            "that no job runs twice. Fix: check that `flux jobs` works here."
        ) from error
    ending = []
    for child in leftovers:
        why = must_end(child, own_run)
        if why is None:
            continue
        verb = "waited for" if child.state == "CLEANUP" else "cancelled"
        log.info(
            f"matensemble: child Flux instance {child.name} (job {child.f58}) of the earlier "
            f"run {child.run}, {child.state}: {verb}, {why}."
        )
        if child.state != "CLEANUP":
            _cancel(flux, handle, child)
        ending.append(child)
    if ending:
        _wait_inactive(flux, handle, ending, timeout)
    return ending


def _cancel(flux: Any, handle: Any, child: LeftoverChild) -> None:
    try:
        flux.job.cancel(handle, child.jobid, f"left by the dead snakemake run {child.run}")
    except OSError as error:  # ended meanwhile
        log.debug(f"matensemble: child job {child.f58}: cancel: {error}")


def _wait_inactive(flux: Any, handle: Any, ending: list[LeftoverChild], timeout: float) -> None:
    started = time.monotonic()
    while True:
        with _sigint_handler_kept():
            active = {
                int(job.id)
                for job in flux.job.JobList(
                    handle, max_entries=0, filters=["pending", "running"], attrs=["state"]
                ).jobs()
            }
        left = [child for child in ending if child.jobid in active]
        if not left:
            log.info(
                f"matensemble: {len(ending)} child Flux instance(s) of earlier runs ended "
                f"after {time.monotonic() - started:.1f} s, their jobs with them."
            )
            return
        if time.monotonic() - started > timeout:
            names = ", ".join(f"{child.name} (job {child.f58})" for child in left)
            raise BackendUnavailableError(
                f"matensemble: child Flux instance(s) {names} of an earlier, dead snakemake "
                f"run did not end within {timeout:g} s of being cancelled; nothing of this "
                "run was started, so that no job runs twice. Fix: run snakemake again once "
                "`flux jobs` no longer lists them."
            )
        time.sleep(POLL_S)
