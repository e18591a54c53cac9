"""The stateful Flux backend: ONE ``FluxExecutor``, guarded callbacks, purging,
Flux's resource journal.

Everything that can be pure lives beside it: :mod:`.options` (settings),
:mod:`.resources` (R and resource events), :mod:`.jobspec` (the jobspec of a
job on a placement), :mod:`.outcome` (a finished future as a result).

Threads: the dispatcher thread calls every method except :meth:`wake`; the
executor's thread runs the future callbacks, which only record and push
events. flux-core logs and swallows an exception raised in a future callback,
so every callback is guarded: an error becomes a failed :class:`JobFinished`
for the job (with the reason), and the dispatcher is woken, so no job's result
is ever lost. A third thread follows the resource journal.

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
from collections.abc import Callable
from typing import Any

from ...allocation import NodeSpec, Placement
from ..base import (
    Backend,
    BackendEvent,
    JobFinished,
    JobStarted,
    LaunchError,
    LaunchSpec,
    RunningJob,
    Status,
    WakePipe,
)
from .jobspec import build_jobspec, urgency
from .options import FluxOptions
from .outcome import LOST_INSTANCE_ERRNOS, outcome
from .resources import expiration_from_rset, nodes_from_rset, reserve_own_cores, resource_event

log = logging.getLogger("snakemake.logging.matensemble.flux")

#: Inactive jobs purged per round (one pipelined ``job-manager.purge-id`` RPC each).
PURGE_BATCH = 200


class FluxBackend(Backend):
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
        if self.options.follow_resources:
            self._follow_resource_journal(since)
        return reserve_own_cores(nodes, own_rank, self.options.reserve_cores)

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

    def _follow_resource_journal(self, since: float) -> None:
        """Follow ``resource.journal`` in a thread with its own handle (epoch ``since``)."""
        try:
            from flux.resource.journal import ResourceJournalConsumer
        except ImportError:
            log.info(
                "matensemble: this flux-python has no resource journal; drained or "
                "lost ranks are not followed."
            )
            return

        def follow() -> None:
            try:
                handle = self.flux.Flux()
                consumer = ResourceJournalConsumer(handle, since=since).start()
                while not self._journal_stop.is_set():
                    try:
                        entry = consumer.poll(timeout=0.5)
                    except TimeoutError:
                        continue
                    if entry is None:
                        return
                    if entry.is_empty():
                        continue
                    event = resource_event(entry.name, entry.context, entry.timestamp)
                    if event is not None:
                        self._push(event)
            except Exception as error:  # never let the thread die silently
                if not self._journal_stop.is_set():
                    log.warning(f"matensemble: stopped following Flux's resource journal: {error}")

        self._journal_thread = threading.Thread(
            target=follow, name="matensemble-flux-resources", daemon=True
        )
        self._journal_thread.start()

    @property
    def running_count(self) -> int:
        with self._lock:
            return (
                len(self._futures)
                + len(self._recover)
                + sum(len(v) for v in self._deferred.values())
            )

    def _executor_failed(self, future: Any) -> bool:
        """Whether ``future`` failed because the executor broke, not the job."""
        if self._cancelling or self.executor_restarts >= 3 or future.cancelled():
            return False
        error = future.exception()
        if error is None or isinstance(error, self.flux.job.JobException):
            return False
        if isinstance(error, OSError) and error.errno in LOST_INSTANCE_ERRNOS:
            return False  # the instance is gone, not only the executor
        broken = getattr(self.executor, "_broken_event", None)
        return broken is not None and broken.is_set()

    def _recover_jobs(self) -> None:
        """A new ``FluxExecutor`` for the one whose thread died, re-attached to
        every job the old one was following (dispatcher thread)."""
        with self._lock:
            jobs, self._recover = self._recover, []
        if not jobs:
            return
        broken = getattr(self.executor, "_broken_event", None)
        try:
            if broken is not None and broken.is_set():
                old = self.executor
                self.executor_restarts += 1
                self.executor = self.flux.job.FluxExecutor(poll_interval=0.002)
                log.warning(
                    "matensemble: the FluxExecutor's thread failed (a flux-python error); "
                    f"a new executor follows its {len(jobs)} job(s) (restart "
                    f"{self.executor_restarts} of at most 3)."
                )
                old.shutdown(wait=False)
            for spec, jobid in jobs:
                self._follow(spec, self.executor.attach(self.flux.job.JobID(jobid)))
                with self._lock:
                    self._jobids[spec.key] = jobid
        except Exception as error:  # no new executor: the instance itself is gone
            reason = self._lost(error)
            for spec, _ in jobs:
                with self._lock:
                    self._futures.pop(spec.key, None)
                    self._started.discard(spec.key)
                self._push(JobFinished(spec.key, Status.FAILED, reason, time=time.time()))

    @property
    def supports_lookahead(self) -> bool:  # type: ignore[override]
        return self.options.lookahead

    # -- jobspec ----------------------------------------------------------------
    def jobspec(self, spec: LaunchSpec, placement: Placement, depends_on: int | None = None) -> Any:
        return build_jobspec(
            self.flux.job.JobspecV1, spec, placement, self.options, self.run_id, depends_on
        )

    def urgency(self, spec: LaunchSpec) -> int:
        return urgency(self.options, spec)

    # -- launching --------------------------------------------------------------
    def launch(self, spec: LaunchSpec, placement: Placement, after: int | None = None) -> str:
        os.makedirs(os.path.dirname(os.path.abspath(spec.log_path)), exist_ok=True)
        depends_on = None
        if after is not None:
            with self._lock:
                if after in self._futures and after not in self._jobids:
                    # the predecessor has no Flux id yet: submit once it has
                    self._deferred.setdefault(after, []).append((spec, placement))
                    return f"deferred:{spec.key}"
                depends_on = self._jobids.get(after) if after in self._futures else None
        self._submit(spec, placement, depends_on)
        return f"pending:{spec.key}"

    def _submit(self, spec: LaunchSpec, placement: Placement, depends_on: int | None) -> None:
        try:
            jobspec = self.jobspec(spec, placement, depends_on)
            future = self.executor.submit(jobspec, urgency=self.urgency(spec))
        except RuntimeError as error:  # the executor is broken: the instance is gone
            raise LaunchError(self._lost(error)) from error
        except (ValueError, TypeError, OSError) as error:
            raise LaunchError(f"could not be submitted to Flux: {error}") from error
        self._follow(spec, future)

    def _submit_deferred(self, predecessor: int, depends_on: int | None) -> None:
        """Submit the successors that waited for ``predecessor``'s Flux id."""
        with self._lock:
            waiting = self._deferred.pop(predecessor, [])
        for spec, placement in waiting:
            try:
                self._submit(spec, placement, depends_on)
            except LaunchError as error:
                self._push(JobFinished(spec.key, Status.LAUNCH_ERROR, str(error), time=time.time()))

    def _follow(self, spec: LaunchSpec, future: Any) -> None:
        with self._lock:
            self._futures[spec.key] = future
            self._specs[spec.key] = spec
        key = spec.key
        future.add_jobid_callback(self._guarded(key, future, self._on_jobid))
        future.add_event_callback("start", self._guarded(key, future, self._on_start))
        future.add_done_callback(self._guarded(key, future, self._on_done))

    def _guarded(self, key: int, future: Any, callback: Callable[..., None]) -> Callable[..., None]:
        """``callback(key, future, *args)`` that never raises into flux-core.

        An exception becomes a failed result for the job (flux-core would log
        and swallow it, and the job's result would be lost), and the job is
        forgotten so that no second result follows.
        """

        def guarded(*args: Any) -> None:
            try:
                callback(key, *args)
            except Exception as error:
                log.exception(f"matensemble: handling a Flux event of job {key} failed")
                with self._lock:
                    current = self._futures.get(key) is future
                    if current:
                        self._futures.pop(key, None)
                        self._specs.pop(key, None)
                        self._jobids.pop(key, None)
                if current:
                    self._push(
                        JobFinished(
                            key,
                            Status.FAILED,
                            f"lost its Flux result: the plugin's handling of a Flux event "
                            f"failed ({error!r}); see the log",
                            time=time.time(),
                        )
                    )

        return guarded

    def _current(self, key: int, future: Any) -> bool:
        """Whether ``future`` is still the job ``key`` (not withdrawn or replaced)."""
        with self._lock:
            return self._futures.get(key) is future

    # -- re-attaching -------------------------------------------------------------
    def find_running(self, backend_id: str) -> RunningJob | None:
        """A pending or running Flux job of an earlier run (``backend_id``: its id)."""
        try:
            jobid = self.flux.job.JobID(backend_id)
            info = self.flux.job.job_list_id(self.handle, jobid).get_jobinfo()
        except (OSError, ValueError, TypeError) as error:
            log.debug(f"matensemble: Flux job {backend_id} cannot be re-attached: {error}")
            return None
        if info.state in ("INACTIVE", "CLEANUP"):
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
        self._follow(spec, self.executor.attach(self.flux.job.JobID(job.backend_id)))

    # -- future callbacks (executor thread) ----------------------------------------
    def _on_jobid(self, key: int, future: Any) -> None:
        jobid = future.jobid()
        with self._lock:
            current = self._futures.get(key) is future
            if current:
                self._jobids[key] = jobid
            cancel_now = self._cancelling or not current
            if not current:
                self._withdrawn_ids.add(jobid)
            if cancel_now:  # by the dispatcher thread: no RPC in a callback
                self._to_cancel.append(
                    (jobid, "withdrawn by the snakemake run" if not current else None)
                )
        if cancel_now:
            self._wake.wake()
        if current:
            self._submit_deferred(key, jobid)

    def _on_start(self, key: int, future: Any, event: Any) -> None:
        if not self._current(key, future):
            return
        with self._lock:
            if key in self._started:
                return  # said already (a job followed again by a new executor)
            self._started.add(key)
        jobid = self.flux.job.JobID(future.jobid())
        self._push(JobStarted(key, jobid.f58, event.timestamp))

    def _on_done(self, key: int, future: Any) -> None:
        with self._lock:
            if self._futures.get(key) is not future:
                return  # withdrawn: its outcome means nothing
            spec = self._specs.get(key)
            jobid = self._jobids.get(key)
        if self._executor_failed(future) and spec is not None and jobid is not None:
            # not the job's outcome: the executor's thread died (flux-python
            # raises in its own callbacks, e.g. after a node failure); the job
            # may still run: follow it again with a new executor
            with self._lock:
                self._futures.pop(key, None)
                self._recover.append((spec, jobid))  # (it stays started, if it was)
            self._wake.wake()
            return
        result = self.outcome(key, future, spec, jobid)  # if it raises: the guard reports
        with self._lock:
            self._futures.pop(key, None)
            self._specs.pop(key, None)
            self._jobids.pop(key, None)
            self._started.discard(key)
        if result.ok and jobid is not None and self.options.keep_inactive is not None:
            with self._lock:
                self._inactive.append(jobid)
        self._push(result)
        self._submit_deferred(key, None)  # never got a Flux id: nothing to wait for

    def _push(self, event: BackendEvent) -> None:
        self._events.put(event)
        self._wake.wake()

    def outcome(
        self, key: int, future: Any, spec: LaunchSpec | None, jobid: int | None
    ) -> JobFinished:
        """Map a finished future to a :class:`JobFinished` (see :func:`.outcome.outcome`)."""
        return outcome(
            key,
            future,
            job_exception=self.flux.job.JobException,
            where=f"Flux job {self.flux.job.JobID(jobid).f58}" if jobid else "Flux job",
            walltime_s=spec.request.walltime_s if spec else None,
            cancelling=self._cancelling,
            instance_lost=self._lost,
            now=time.time(),
        )

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

    # -- withdrawing -------------------------------------------------------------
    def withdraw(self, key: int) -> bool:
        """Cancel job ``key`` if Flux has not started it; its result is ignored."""
        with self._lock:
            for predecessor, waiting in list(self._deferred.items()):
                kept = [(s, p) for s, p in waiting if s.key != key]
                if len(kept) != len(waiting):
                    self._deferred[predecessor] = kept
                    return True
            if key not in self._futures or key in self._started:
                return False
            future = self._futures.pop(key)
            self._specs.pop(key, None)
            jobid = self._jobids.pop(key, None)
            if jobid is not None:
                self._withdrawn_ids.add(jobid)
            waiting = self._deferred.pop(key, [])
        future.cancel()  # only succeeds before the job reached Flux
        if jobid is not None:
            self._cancel_one(jobid, "withdrawn by the snakemake run")
        for spec, placement in waiting:  # their predecessor is gone: submit plainly
            self._submit(spec, placement, None)
        return True

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

    # -- purging ------------------------------------------------------------------
    def _purge(self) -> None:
        """Purge this run's oldest successful inactive jobs beyond the newest
        ``keep_inactive`` (failed ones are kept for inspection), so that Flux's
        throughput does not fall as inactive jobs pile up."""
        keep = self.options.keep_inactive
        if keep is None or len(self._inactive) < keep + PURGE_BATCH:
            return
        with self._lock:
            batch = [self._inactive.popleft() for _ in range(len(self._inactive) - keep)]
        try:
            if self._purge_handle is None:
                self._purge_handle = self.flux.Flux()
            futures = [
                self._purge_handle.rpc("job-manager.purge-id", {"id": jobid, "force": 1})
                for jobid in batch
            ]
            for future in futures:
                try:
                    future.get()
                    self.purged += 1
                except OSError as error:  # already purged (e.g. by flux's own limits)
                    log.debug(f"matensemble: purge: {error}")
        except Exception as error:  # purging is housekeeping: never fail the run
            log.warning(f"matensemble: could not purge inactive Flux jobs: {error}")
            self.options = _replace(self.options, keep_inactive=None)
            return
        log.debug(f"matensemble: purged {len(batch)} inactive Flux job(s) of this run.")

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
        self.executor.shutdown(wait=True, cancel_futures=True)
        if self._journal_thread is not None:
            self._journal_thread.join(timeout=2.0)
        self._wake.close()


def _replace(options: FluxOptions, **changes: Any) -> FluxOptions:
    import dataclasses

    return dataclasses.replace(options, **changes)
