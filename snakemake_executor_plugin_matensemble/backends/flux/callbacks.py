"""The future callbacks of the Flux backend (run on the executor's thread) and
the recovery of jobs whose executor thread died.

flux-core logs and swallows an exception raised in a future callback, so every
callback is guarded: an error becomes a failed :class:`JobFinished` for the
job (with the reason), and the dispatcher is woken, so no job's result is ever
lost. Callbacks never make RPCs: a cancel they need is queued for the
dispatcher thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ..base import JobFinished, JobStarted, JobStatus, LaunchSpec
from .outcome import LOST_INSTANCE_ERRNOS, outcome

log = logging.getLogger("snakemake.logging.matensemble.flux")


class CallbackMixin:
    """Part of :class:`~.instance.FluxInstance` (its state lives there)."""

    flux: Any
    executor: Any

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
                self.executor = self.new_executor()
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
                self._push(JobFinished(spec.key, JobStatus.FAILED, reason, time=time.time()))

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
                            JobStatus.FAILED,
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
            self._R_ends.pop(key, None)
        if result.ok and jobid is not None and self.options.keep_inactive is not None:
            with self._lock:
                self._inactive.append(jobid)
        self._push(result)
        self._submit_deferred(key, None)  # never got a Flux id: nothing to wait for

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
