"""Submission of the Flux backend: the jobspec, launching, look-ahead
(a successor submitted with an ``afterany`` dependency on the running job whose
cores it takes), following a future, and withdrawing a job not yet started.

Runs on the dispatcher thread, except :meth:`SubmissionMixin._submit_deferred`,
which the jobid callback calls when a predecessor gets its Flux id.
"""

from __future__ import annotations

import os
import time
from typing import Any

from ...packing.nodes import Placement
from ..base import JobFinished, JobStatus, LaunchError, LaunchSpec
from .bypass import KILL_GRACE_S, bypass_R
from .jobspec import build_jobspec, urgency


class SubmissionMixin:
    """Part of :class:`~.instance.FluxInstance` (its state lives there)."""

    flux: Any
    options: Any
    run_id: str
    owner: dict[str, Any]
    jobspec_of: Any
    bypass: bool
    _hostnames: dict[int, str]
    instance_end: float | None
    #: bypass: the end given to each job's R, and each successor's predecessor
    _R_ends: dict[int, float]
    _after: dict[int, int]

    # -- jobspec ----------------------------------------------------------------
    def build_jobspec(
        self, spec: LaunchSpec, placement: Placement, depends_on: int | None = None
    ) -> Any:
        return build_jobspec(
            self.flux.job.JobspecV1,
            spec,
            placement,
            self.options,
            self.run_id,
            depends_on,
            owner=self.owner,
            given_R=self._given_R(spec, placement) if self.bypass else None,
        )

    def _given_R(self, spec: LaunchSpec, placement: Placement) -> dict[str, Any]:
        """The job's R, its end remembered (a successor submitted ahead ends
        at most its walltime after the latest end of its predecessor)."""
        walltime, latest_start = spec.request.walltime_s, None
        with self._lock:
            predecessor = self._after.pop(spec.key, None)
            if predecessor is not None:
                latest = self._R_ends.get(predecessor)
                latest_start = latest + KILL_GRACE_S if latest else None
                walltime = walltime if latest else None
        R = bypass_R(
            placement, self._hostnames, time.time(), walltime, self.instance_end, latest_start
        )
        with self._lock:
            self._R_ends[spec.key] = R["execution"]["expiration"]
        return R

    def urgency(self, spec: LaunchSpec) -> int:
        return urgency(self.options, spec)

    # -- launching --------------------------------------------------------------
    def launch(self, spec: LaunchSpec, placement: Placement, after: int | None = None) -> str:
        os.makedirs(os.path.dirname(os.path.abspath(spec.log_path)), exist_ok=True)
        depends_on = None
        if after is not None:
            with self._lock:
                if self.bypass:
                    self._after[spec.key] = after
                if after in self._futures and after not in self._jobids:
                    # the predecessor has no Flux id yet: submit once it has
                    self._deferred.setdefault(after, []).append((spec, placement))
                    return f"deferred:{spec.key}"
                depends_on = self._jobids.get(after) if after in self._futures else None
        self._submit(spec, placement, depends_on)
        return f"pending:{spec.key}"

    def _submit(self, spec: LaunchSpec, placement: Placement, depends_on: int | None) -> None:
        try:
            jobspec = self.jobspec_of(spec, placement, depends_on)
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
                self._push(
                    JobFinished(spec.key, JobStatus.LAUNCH_ERROR, str(error), time=time.time())
                )

    def _follow(self, spec: LaunchSpec, future: Any) -> None:
        with self._lock:
            self._futures[spec.key] = future
            self._specs[spec.key] = spec
        key = spec.key
        future.add_jobid_callback(self._guarded(key, future, self._on_jobid))
        future.add_event_callback("start", self._guarded(key, future, self._on_start))
        future.add_done_callback(self._guarded(key, future, self._on_done))

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
