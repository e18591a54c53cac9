"""The stateful Flux backend: ONE ``FluxExecutor``, its state and its lifecycle
(discovery, waiting, cancelling, closing).

Its parts, one concern each, are mixins over that state:
:mod:`.submission` (jobspec, launching, look-ahead, withdrawing),
:mod:`.callbacks` (the guarded future callbacks, a dead executor's recovery),
:mod:`.adoption` (what dead runs left behind: adopted or cancelled at
start-up; re-attaching), :mod:`.purge` (the run's inactive jobs),
:mod:`.resource_journal` (drained, lost and returning ranks). Everything that
can be pure lives beside them: :mod:`.options`, :mod:`.resources`,
:mod:`.jobspec`, :mod:`.outcome`, :mod:`.leftovers`.

Threads: the dispatcher thread calls every method except :meth:`wake`; the
executor's thread runs the future callbacks, which only record and push
events. A third thread follows the resource journal.

A Flux handle is not thread-safe: every thread uses its own (:attr:`handle`
is per thread), and callbacks never make RPCs: a cancel they need is queued
for the dispatcher thread.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import queue
import threading
import time
from typing import Any

from ...allocation import NodeSpec, Placement
from ..base import (
    Backend,
    BackendEvent,
    JobFinished,
    LaunchError,
    LaunchSpec,
    ResourceEvent,
    WakePipe,
)
from .adoption import AdoptionMixin
from .bypass import enable_bypass
from .callbacks import CallbackMixin
from .leftovers import Leftover, owner_identity
from .options import FluxOptions
from .purge import PurgeMixin
from .resource_journal import follow_resource_journal
from .resources import expiration_from_rset, nodes_from_rset, reserve_own_cores
from .submission import SubmissionMixin

log = logging.getLogger("snakemake.logging.matensemble.flux")


class FluxBackend(SubmissionMixin, CallbackMixin, AdoptionMixin, PurgeMixin, Backend):
    """Runs every job as a Flux job of the enclosing instance."""

    name = "flux"
    can_attach = True

    def __init__(self, options: FluxOptions, run_id: str = "", flux_module: Any = None):
        if flux_module is None:
            import flux
            import flux.hostlist
            import flux.job
            import flux.resource

            flux_module = flux
        self.flux = flux_module
        self.options = options
        self.run_id = run_id
        #: who this run's jobs belong to (in every jobspec)
        self.owner = owner_identity(run_id)
        self._thread_handles = threading.local()
        self._thread_handles.handle = self.flux.Flux()
        self.executor = self.flux.job.FluxExecutor(poll_interval=0.002)
        log.info("matensemble: started one FluxExecutor for the run.")
        self._events: queue.SimpleQueue[BackendEvent] = queue.SimpleQueue()
        self._wake = WakePipe()
        self._lock = threading.Lock()
        self._futures: dict[int, Any] = {}
        self._jobids: dict[int, int] = {}
        self._specs: dict[int, LaunchSpec] = {}
        self._started: set[int] = set()
        self._cancelling = False
        self._instance_lost = False
        #: successors waiting for their predecessor's Flux id: key -> [(spec, placement)]
        self._deferred: dict[int, list[tuple[LaunchSpec, Placement]]] = {}
        #: Flux ids of withdrawn jobs (cancelled, their results ignored)
        self._withdrawn_ids: set[int] = set()
        #: successful inactive jobs of this run, oldest first (purge candidates)
        self._inactive: collections.deque[int] = collections.deque()
        self._purge_handle: Any = None
        #: inactive jobs purged so far
        self.purged = 0
        #: jobs whose future failed with the executor itself (its thread died),
        #: to be followed again by a new executor: (spec, Flux id)
        self._recover: list[tuple[LaunchSpec, int]] = []
        #: executors replaced so far (each after its thread died)
        self.executor_restarts = 0
        #: Flux ids to cancel, queued by callbacks for the dispatcher thread
        self._to_cancel: list[tuple[int, str | None]] = []
        self._journal_stop = threading.Event()
        self._journal_thread: threading.Thread | None = None
        self._adoptable: dict[int, Leftover] = {}
        #: jobs carry their R (alloc-bypass); decided once, at discovery
        self.bypass = False
        #: when the instance ends (epoch s, None: never), a bypassed job's latest end
        self.instance_end: float | None = None
        self._R_ends: dict[int, float] = {}
        self._after: dict[int, int] = {}
        #: rank -> host name (for a bypassed job's R)
        self._hostnames: dict[int, str] = {}

    @property
    def handle(self) -> Any:
        """This thread's Flux handle (handles are not thread-safe)."""
        handle = getattr(self._thread_handles, "handle", None)
        if handle is None:
            handle = self._thread_handles.handle = self.flux.Flux()
        return handle

    @classmethod
    def from_settings(cls, settings: Any, run_id: str = "") -> FluxBackend:
        return cls(FluxOptions.from_settings(settings), run_id=run_id)

    # -- discovery --------------------------------------------------------------
    def discover(self) -> list[NodeSpec]:
        """The ranks that are up and not drained; starts following the resource
        journal from this moment on (drains, lost and returning ranks)."""
        since = time.time()
        resources = self.flux.resource.resource_list(self.handle).get()
        up = json.loads(resources.up.encode())
        nodes = nodes_from_rset(up, lambda entry: list(self.flux.hostlist.Hostlist(entry)))
        if not nodes:
            raise LaunchError("the Flux instance has no resources that are up")
        self._expiration = expiration_from_rset(up)
        own_rank = self.handle.get_rank()
        self._hostnames = {node.rank: node.name for node in nodes}
        self.bypass = self._choose_bypass()
        self.instance_end = self.expiration()
        if self.options.follow_resources:
            self._journal_thread = follow_resource_journal(
                self.flux, since, self._journal_stop, self._push
            )
        return reserve_own_cores(nodes, own_rank, self.options.reserve_cores)

    def _choose_bypass(self) -> bool:
        """Whether jobs carry their own R (see :mod:`.bypass`); said once."""
        if not self.options.alloc_bypass:
            return False
        why_not = enable_bypass(self.handle)
        if why_not is not None:
            log.info(f"matensemble: Flux's scheduler places every job: {why_not}.")
            return False
        log.info(
            "matensemble: each job's ranks, cores and GPUs go to Flux as its R "
            "(alloc-bypass): no scheduler match per job (--matensemble-flux-no-alloc-bypass "
            "turns this off)."
        )
        return True

    def expiration(self) -> float | None:
        """When the instance ends, epoch seconds (its resources' expiration, or
        ``flux.job.timeleft``); None if it has no time limit."""
        expiration = getattr(self, "_expiration", None)
        if expiration is not None:
            return expiration
        timeleft = getattr(self.flux.job, "timeleft", None)
        if timeleft is None:
            return None
        try:
            left = float(timeleft(self.handle))
        except (OSError, ValueError) as error:
            log.debug(f"matensemble: no Flux time limit known ({error}).")
            return None
        return time.time() + left if left != float("inf") else None

    @property
    def running_count(self) -> int:
        with self._lock:
            return (
                len(self._futures)
                + len(self._recover)
                + sum(len(v) for v in self._deferred.values())
            )

    def _push(self, event: BackendEvent) -> None:
        if isinstance(event, ResourceEvent) and event.kind == "expiration":
            self.instance_end = event.expiration
        self._events.put(event)
        self._wake.wake()

    def _lost(self, error: BaseException) -> str:
        """The reason for jobs whose Flux instance stopped answering (said once)."""
        uri = os.environ.get("FLUX_URI", "?")
        reason = (
            f"was lost with the Flux instance at {uri}, which stopped answering ({error}); "
            "run again in a new allocation (add --rerun-incomplete)"
        )
        with self._lock:
            first, self._instance_lost = not self._instance_lost, True
        if first:
            log.error(f"matensemble: the Flux instance at {uri} stopped answering ({error}).")
        return reason

    # -- waiting ----------------------------------------------------------------
    def wake(self) -> None:
        self._wake.wake()

    def wait(self, timeout: float | None) -> list[BackendEvent]:
        self._recover_jobs()
        self._cancel_queued()
        self._purge()
        events = self._drain()
        if events:
            return events
        self._wake.wait(timeout)
        return self._drain()

    def _cancel_queued(self) -> None:
        with self._lock:
            queued, self._to_cancel = self._to_cancel, []
        for jobid, reason in queued:
            self._cancel_one(jobid, reason)

    def _drain(self) -> list[BackendEvent]:
        events = []
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                return events

    # -- stopping ---------------------------------------------------------------
    def _cancel_one(self, jobid: int, reason: str | None = None) -> None:
        try:
            self.flux.job.cancel(self.handle, jobid, reason or "snakemake run cancelled")
        except OSError as error:  # already inactive
            log.debug(f"matensemble: cancel of Flux job {jobid}: {error}")

    def cancel_all(self) -> list[JobFinished]:
        with self._lock:
            self._cancelling = True
            jobids = list(self._jobids.values())
            futures = list(self._futures.values())
        for future in futures:
            future.cancel()  # only succeeds for jobs not yet handed to Flux
        for jobid in jobids:
            self._cancel_one(jobid)
        deadline = time.monotonic() + self.options.cancel_timeout
        finished: list[JobFinished] = []
        while self.running_count and time.monotonic() < deadline:
            finished.extend(e for e in self.wait(0.2) if isinstance(e, JobFinished))
        finished.extend(e for e in self._drain() if isinstance(e, JobFinished))
        if self.running_count:
            log.warning(
                f"matensemble: {self.running_count} Flux job(s) did not end within "
                f"{self.options.cancel_timeout:g} s of being cancelled."
            )
        return finished

    def close(self) -> None:
        self._journal_stop.set()
        if self.running_count:
            self.cancel_all()
        self._cancel_unattached()
        self.executor.shutdown(wait=True, cancel_futures=True)
        if self._journal_thread is not None:
            self._journal_thread.join(timeout=2.0)
        self._wake.close()
