"""Settling what dead runs left in the Flux instance, and re-attaching.

At start-up, before anything is submitted (:meth:`AdoptionMixin.settle_leftovers`):
ONE ``job-list`` query for the active jobs of this user (job-list's default), the owners of those in
this workdir read in one pipelined ``job-info.lookup`` round (only jobs in this
workdir, so none when nothing was left), then per job one log line and
:func:`~.leftovers.decide`'s action. Cancelled jobs are waited for, one
``job-list`` query per 0.1 s, until Flux says they are inactive, so that no
job of this run ever runs beside its dead predecessor.

Later, when Snakemake submits a job whose incomplete markers name an adopted
Flux job, :meth:`AdoptionMixin.find_running` hands it to the packer and
:meth:`AdoptionMixin.attach` follows it. Only adopted jobs are ever re-attached.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Collection, Iterator
from typing import Any

from ...errors import BackendUnavailableError
from ..base import LaunchSpec, RunningJob
from .leftovers import (
    ADOPT,
    CANCEL,
    OWNER_ATTRIBUTE,
    WAIT,
    Leftover,
    decide,
    describe,
    is_plugin_job,
)

log = logging.getLogger("snakemake.logging.matensemble.flux")

#: Seconds between two looks at whether cancelled leftovers have ended.
SETTLE_POLL = 0.1


class AdoptionMixin:
    """Part of :class:`~.instance.FluxInstance` (its state lives there)."""

    flux: Any
    options: Any
    run_id: str
    handle: Any
    executor: Any
    #: leftovers adopted at start-up, by Flux id (the only ones re-attached)
    _adoptable: dict[int, Leftover]

    def settle_leftovers(self, resumable: Collection[str]) -> None:
        """Adopt or cancel every job that dead runs left in this workdir, and
        wait until the cancelled ones have ended (see the module's docstring).

        ``resumable``: the backend ids Snakemake's incomplete markers give to
        jobs this run needs. Raises :class:`BackendUnavailableError` if a
        cancelled job does not end in time (nothing has been submitted then;
        the backend is closed, as on any error or Ctrl-C while it settles).
        """
        try:
            self._settle(self._flux_ids(resumable))
        except BaseException:  # Ctrl-C included: nothing started, let go of Flux
            self.close()
            raise

    def _settle(self, resumable_ids: set[int]) -> None:
        ending: dict[int, Leftover] = {}
        try:
            leftovers = self._find_leftovers(os.getcwd())
        except (OSError, AttributeError, TypeError, ValueError) as error:
            raise BackendUnavailableError(
                "matensemble: could not list the Flux jobs that earlier snakemake runs "
                f"may have left in this directory ({error!r}); nothing was started, so "
                "that no job runs twice. Fix: check that `flux jobs` works here."
            ) from error
        for leftover in leftovers:
            action, reason = decide(leftover, resumable_ids, self.run_id)
            log.info(describe(leftover, action, reason))
            if action == ADOPT:
                self._adoptable[leftover.jobid] = leftover
            elif action in (CANCEL, WAIT):
                if action == CANCEL:
                    self._cancel_one(
                        leftover.jobid, f"left by the dead snakemake run {leftover.run}"
                    )
                ending[leftover.jobid] = leftover
        if ending:
            self._wait_until_ended(ending)

    def _flux_ids(self, backend_ids: Collection[str]) -> set[int]:
        ids = set()
        for backend_id in backend_ids:
            try:
                ids.add(int(self.flux.job.JobID(backend_id)))
            except (ValueError, TypeError, OSError):
                log.debug(f"matensemble: {backend_id!r} is not a Flux job id.")
        return ids

    def _active_jobs(self, attrs: list[str]) -> list[Any]:
        """This user's pending and running jobs: ONE streaming ``job-list`` RPC.

        flux-python makes a blocking ``get`` on the main thread interruptible by
        setting SIGINT to its default while it waits, and does not restore the
        handler when the stream ends with ENODATA: without the restore here, a
        later Ctrl-C would kill Snakemake without cancelling a single job.
        """
        with _sigint_handler_kept():
            return self.flux.job.JobList(
                self.handle, max_entries=0, filters=["pending", "running"], attrs=attrs
            ).jobs()

    def _find_leftovers(self, workdir: str) -> list[Leftover]:
        """The active jobs of this user in ``workdir`` that the plugin submitted."""
        jobs = self._active_jobs(["state", "cwd", "ranks", "ncores", "t_run"])
        here = [job for job in jobs if getattr(job, "cwd", None) == workdir]
        if not here:
            return []
        lookup = self.flux.job.JobKVSLookup(self.handle, ids=[job.id for job in here])
        with _sigint_handler_kept():
            found = lookup.data()
        owners = {
            int(data["id"]): _owner(data.get("jobspec"))
            for data in found
            if isinstance(data, dict) and "id" in data
        }
        return [
            _leftover(job, owners[int(job.id)])
            for job in here
            if is_plugin_job(owners.get(int(job.id)), workdir)
        ]

    def _wait_until_ended(self, ending: dict[int, Leftover]) -> None:
        """Block until Flux lists none of ``ending`` as active."""
        started = time.monotonic()
        deadline = started + self.options.cancel_timeout
        while True:
            active = {int(job.id) for job in self._active_jobs(["state"])}
            left = [ending[jobid] for jobid in ending if jobid in active]
            if not left:
                log.info(
                    f"matensemble: {len(ending)} Flux job(s) of earlier runs ended after "
                    f"{time.monotonic() - started:.1f} s; starting this run's jobs."
                )
                return
            if time.monotonic() > deadline:
                names = ", ".join(f"{job.f58} ({job.name})" for job in left)
                raise BackendUnavailableError(
                    f"matensemble: Flux job(s) {names} of an earlier, dead snakemake run "
                    f"did not end within {self.options.cancel_timeout:g} s of being "
                    "cancelled; nothing of this run was started, so that no job runs "
                    "twice. Fix: run snakemake again once `flux jobs` no longer lists them."
                )
            time.sleep(SETTLE_POLL)

    # -- re-attaching ---------------------------------------------------------------
    def find_running(self, backend_id: str) -> RunningJob | None:
        """The adopted job ``backend_id`` of a dead run, if it still runs."""
        try:
            jobid = self.flux.job.JobID(backend_id)
        except (OSError, ValueError, TypeError) as error:
            log.debug(f"matensemble: {backend_id!r} is not a Flux job id: {error}")
            return None
        if int(jobid) not in self._adoptable:
            log.debug(f"matensemble: Flux job {backend_id} was not adopted at start-up.")
            return None
        try:
            with _sigint_handler_kept():
                info = self.flux.job.job_list_id(self.handle, jobid).get_jobinfo()
        except (OSError, ValueError, TypeError) as error:
            log.debug(f"matensemble: Flux job {backend_id} cannot be re-attached: {error}")
            return None
        if info.state != "RUN":
            return None
        ranks = tuple(int(r) for r in info.ranks) if info.ranks else ()
        nodes = max(1, len(ranks))
        return RunningJob(
            backend_id=jobid.f58,
            ranks=ranks,
            cores_per_rank=info.ncores // nodes,
            gpus_per_rank=(getattr(info, "ngpus", 0) or 0) // nodes,
            started_at=info.t_run or time.time(),
        )

    def attach(self, spec: LaunchSpec, job: RunningJob) -> None:
        log.info(f"matensemble: re-attached to Flux job {job.backend_id} ({spec.name}).")
        jobid = self.flux.job.JobID(job.backend_id)
        self._adoptable.pop(int(jobid), None)  # from now on followed like any other
        self._follow(spec, self.executor.attach(jobid))

    def _cancel_unattached(self) -> None:
        """Cancel adopted jobs this run never re-attached to (it ended, failed or
        was interrupted before Snakemake got to their jobs): nothing is left
        running unseen."""
        for jobid, leftover in list(self._adoptable.items()):
            log.info(
                f"matensemble: cancelling Flux job {leftover.f58} ({leftover.name}) of the "
                f"earlier run {leftover.run}: this run ended before re-attaching to it."
            )
            self._cancel_one(jobid, "adopted, but the snakemake run ended before using it")
        self._adoptable.clear()


@contextlib.contextmanager
def _sigint_handler_kept() -> Iterator[None]:
    """Restore the SIGINT handler after a flux-python call on the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        if handler is not None:
            signal.signal(signal.SIGINT, handler)


def _owner(jobspec: Any) -> Any:
    """The ``user.snakemake`` attribute of a jobspec (None if it has none)."""
    if not isinstance(jobspec, dict):
        return None
    node: Any = jobspec.get("attributes", {})
    for part in OWNER_ATTRIBUTE.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _leftover(job: Any, owner: dict[str, Any]) -> Leftover:
    ranks = getattr(job, "ranks", None)
    return Leftover(
        jobid=int(job.id),
        f58=job.id.f58,
        state=str(job.state),
        owner=owner,
        ranks=tuple(int(r) for r in ranks) if ranks else (),
        ncores=int(getattr(job, "ncores", 0) or 0),
        t_run=float(getattr(job, "t_run", 0.0) or 0.0),
    )
