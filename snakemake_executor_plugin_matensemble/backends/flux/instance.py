"""One Flux instance the run submits to: its handles (one per thread), its ONE
``FluxExecutor``, the futures of the jobs it runs and their callbacks.

The instance is made from a name and a handle opener (a callable returning a
``flux.Flux`` handle) and, for an instance that is not the enclosing one, its
URI (the executor opens its own handle in its own thread from it). So a child
instance, reached through a relay, plugs in beside the enclosing one:
:class:`~.backend.FluxBackend` routes each job to the instance that owns its
ranks and gathers the events of all of them.

Its parts, one concern each, are mixins over the instance's state:
:mod:`.submission` (jobspec, launching, look-ahead, withdrawing),
:mod:`.callbacks` (the guarded future callbacks, a dead executor's recovery),
:mod:`.adoption` (what dead runs left behind in it) and :mod:`.purge`.

Threads: the dispatcher thread calls every method; the executor's thread runs
the future callbacks, which only record and push events. A Flux handle is not
thread-safe: every thread uses its own (:attr:`FluxInstance.handle`), and
callbacks never make RPCs: a cancel they need is queued for the dispatcher
thread.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from ...packing.nodes import Placement
from ..base import BackendEvent, JobFinished, JobStatus, LaunchSpec, ResourceEvent, WakePipe
from .adoption import AdoptionMixin
from .bypass import enable_bypass
from .callbacks import CallbackMixin
from .leftovers import Leftover
from .options import FluxOptions
from .purge import PurgeMixin
from .submission import SubmissionMixin

log = logging.getLogger("snakemake.logging.matensemble.flux")

#: builds a job's jobspec: (spec, placement, Flux id it depends on) -> jobspec
JobspecBuilder = Callable[[LaunchSpec, Placement, "int | None"], Any]


class FluxInstance(SubmissionMixin, CallbackMixin, AdoptionMixin, PurgeMixin):
    """One Flux instance: its handles, its executor, its jobs' futures and callbacks.

    ``open_handle``: returns a new ``flux.Flux`` handle to the instance (one per
    thread). ``uri``: where the executor's own handle connects (None: the
    enclosing instance, ``FLUX_URI``). ``events``/``wake``: where the instance
    pushes its jobs' events, shared by every instance of the run.
    ``jobspec_of``: builds the jobspec of a job (default :meth:`build_jobspec`).
    """

    def __init__(
        self,
        name: str,
        open_handle: Callable[[], Any],
        *,
        flux_module: Any,
        options: FluxOptions,
        run_id: str,
        owner: dict[str, Any],
        events: queue.SimpleQueue[BackendEvent],
        wake: WakePipe,
        uri: str | None = None,
        jobspec_of: JobspecBuilder | None = None,
    ):
        self.name = name
        self.uri = uri
        self.open_handle = open_handle
        self.flux = flux_module
        self.options = options
        self.run_id = run_id
        self.owner = owner
        self.jobspec_of: JobspecBuilder = jobspec_of or self.build_jobspec
        self._events = events
        self._wake = wake
        self._thread_handles = threading.local()
        self._thread_handles.handle = open_handle()
        self.executor = self.new_executor()
        log.info(f"matensemble: started one FluxExecutor for the run ({name} Flux instance).")
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
        self._adoptable: dict[int, Leftover] = {}
        #: jobs carry their R (alloc-bypass); decided once (:meth:`choose_bypass`)
        self.bypass = False
        #: when the instance ends (epoch s, None: never), a bypassed job's latest end
        self.instance_end: float | None = None
        #: bypass: the end given to each job's R, and each successor's predecessor
        self._R_ends: dict[int, float] = {}
        self._after: dict[int, int] = {}
        #: rank -> host name (for a bypassed job's R)
        self._hostnames: dict[int, str] = {}

    def new_executor(self) -> Any:
        """A ``FluxExecutor`` whose handle (opened in its own thread) reaches this instance."""
        kwargs = {"handle_kwargs": {"url": self.uri}} if self.uri else {}
        return self.flux.job.FluxExecutor(poll_interval=0.002, **kwargs)

    @property
    def handle(self) -> Any:
        """This thread's Flux handle (handles are not thread-safe)."""
        handle = getattr(self._thread_handles, "handle", None)
        if handle is None:
            handle = self._thread_handles.handle = self.open_handle()
        return handle

    def choose_bypass(self, hostnames: dict[int, str], instance_end: float | None) -> None:
        """Whether jobs carry their own R here (see :mod:`.bypass`); said once.
        ``hostnames``: rank -> host name; ``instance_end``: when it ends."""
        self._hostnames = dict(hostnames)
        self.instance_end = instance_end
        self.bypass = False
        if not self.options.alloc_bypass:
            return
        why_not = enable_bypass(self.handle)
        if why_not is not None:
            log.info(f"matensemble: Flux's scheduler places every job: {why_not}.")
            return
        log.info(
            "matensemble: each job's ranks, cores and GPUs go to Flux as its R "
            "(alloc-bypass): no scheduler match per job (--matensemble-flux-no-alloc-bypass "
            "turns this off)."
        )
        self.bypass = True

    @property
    def running_count(self) -> int:
        with self._lock:
            return (
                len(self._futures)
                + len(self._recover)
                + sum(len(v) for v in self._deferred.values())
            )

    def _push(self, event: BackendEvent) -> None:
        self._events.put(event)
        self._wake.wake()

    def resource_event(self, event: ResourceEvent) -> None:
        """A change of the instance's resources (a new end moves bypassed jobs' ends)."""
        if event.kind == "expiration":
            self.instance_end = event.expiration

    def _lost(self, error: BaseException) -> str:
        """The reason for jobs whose Flux instance stopped answering (said once)."""
        uri = self.uri or os.environ.get("FLUX_URI", "?")
        reason = (
            f"was lost with the Flux instance at {uri}, which stopped answering ({error}); "
            "run again in a new allocation (add --rerun-incomplete)"
        )
        with self._lock:
            first, self._instance_lost = not self._instance_lost, True
        if first:
            log.error(f"matensemble: the Flux instance at {uri} stopped answering ({error}).")
        return reason

    def abandon(
        self, reason: str, lost_ranks: tuple[int, ...] = ()
    ) -> tuple[list[JobFinished], list[int]]:
        """The instance is gone (a child instance lost): its started jobs end
        here, once, as failed with ``reason``; the keys of those that never
        started are returned (to be placed again). Any later callback of
        theirs finds them gone and says nothing."""
        with self._lock:
            self._instance_lost = True
            keys = [*self._futures, *(spec.key for spec, _ in self._recover)]
            keys += [spec.key for waiting in self._deferred.values() for spec, _ in waiting]
            started = set(self._started)
            for table in (self._futures, self._specs, self._jobids, self._deferred):
                table.clear()
            self._recover.clear()
            self._started.clear()
            self._to_cancel.clear()
        now = time.time()
        keys = list(dict.fromkeys(keys))
        failed = [
            JobFinished(key, JobStatus.FAILED, reason, time=now, lost_ranks=lost_ranks)
            for key in keys
            if key in started
        ]
        return failed, [key for key in keys if key not in started]

    @property
    def recovering(self) -> bool:
        """Whether jobs of a dead executor wait to be followed again."""
        with self._lock:
            return bool(self._recover)

    # -- the dispatcher thread's rounds ---------------------------------------------
    def housekeeping(self) -> None:
        """Before each wait: re-follow jobs of a dead executor, send the cancels
        callbacks queued, purge old inactive jobs."""
        self._recover_jobs()
        self._cancel_queued()
        self._purge()

    def _cancel_queued(self) -> None:
        with self._lock:
            queued, self._to_cancel = self._to_cancel, []
        for jobid, reason in queued:
            self._cancel_one(jobid, reason)

    # -- stopping ---------------------------------------------------------------
    def _cancel_one(self, jobid: int, reason: str | None = None) -> None:
        try:
            self.flux.job.cancel(self.handle, jobid, reason or "snakemake run cancelled")
        except OSError as error:  # already inactive
            log.debug(f"matensemble: cancel of Flux job {jobid}: {error}")

    def cancel_jobs(self) -> None:
        """Cancel every job of the run here (their ends come as events)."""
        with self._lock:
            self._cancelling = True
            jobids = list(self._jobids.values())
            futures = list(self._futures.values())
        for future in futures:
            future.cancel()  # only succeeds for jobs not yet handed to Flux
        for jobid in jobids:
            self._cancel_one(jobid)

    def close(self) -> None:
        """Cancel adopted jobs never re-attached; stop the executor."""
        self._cancel_unattached()
        self.executor.shutdown(wait=True, cancel_futures=True)
