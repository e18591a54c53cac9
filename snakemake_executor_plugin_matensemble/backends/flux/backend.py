"""The Flux backend: a router over the Flux instances the run submits to.

Each instance is a :class:`~.instance.FluxInstance` (its handles, its ONE
``FluxExecutor``, its jobs' futures and callbacks): the enclosing instance,
and with ``--matensemble-flux-children`` one child instance per node group
(:mod:`.children`, started at discovery). The router sends each job to the
instance that owns all its placement's ranks (:meth:`FluxBackend.instance_for`;
a job over more than one child runs in the enclosing instance), rewrites its
ranks to the child's own, remembers where each job went, and gathers the
events of every instance from one queue (naming the child in
:class:`~..base.JobStarted`). What is the run's, not an instance's, lives
here: discovery, the children (started, watched, lost, closed: its part in
:mod:`.child_routing`), the resource journal (a thread with its own handle),
waiting, cancelling and closing all instances.

Everything that can be pure lives beside it: :mod:`.options`,
:mod:`.resources`, :mod:`.jobspec`, :mod:`.bypass`, :mod:`.outcome`,
:mod:`.leftovers`.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Collection
from typing import Any

from ...packing.nodes import NodeSpec, Placement
from ..base import (
    Backend,
    BackendEvent,
    JobFinished,
    JobStatus,
    LaunchError,
    LaunchSpec,
    ResourceEvent,
    RunningJob,
    WakePipe,
)
from .child_routing import ChildRoutingMixin
from .children.leftovers import end_leftover_children
from .children.relay import job_environment
from .children.routing import local_placement
from .instance import FluxInstance
from .leftovers import owner_identity
from .options import FluxOptions
from .resource_journal import follow_resource_journal
from .resources import expiration_from_rset, nodes_from_rset, reserve_own_cores

log = logging.getLogger("snakemake.logging.matensemble.flux")


class FluxBackend(ChildRoutingMixin, Backend):
    """Runs every job as a Flux job, each in the Flux instance that owns its placement."""

    name = "flux"
    can_attach = True

    def __init__(self, options: FluxOptions, run_id: str = "", flux_module: Any = None):
        if flux_module is None:
            import flux
            import flux.hostlist
            import flux.job
            import flux.kvs
            import flux.resource

            flux_module = flux
        self.flux = flux_module
        self.options = options
        self.run_id = run_id
        #: who this run's jobs belong to (in every jobspec)
        self.owner = owner_identity(run_id)
        self._events: queue.SimpleQueue[BackendEvent] = queue.SimpleQueue()
        self._wake = WakePipe()
        #: every instance of the run, by name
        self.instances: dict[str, FluxInstance] = {}
        #: the instance this process runs in
        self.enclosing = self.add_instance("enclosing", self.flux.Flux)
        #: job key -> the instance it was sent to (until it ends)
        self._routes: dict[int, FluxInstance] = {}
        self._routes_lock = threading.Lock()
        self._journal_stop = threading.Event()
        self._journal_thread: threading.Thread | None = None
        self._init_children()
        #: enclosing rank -> host name (from discovery)
        self._hostnames: dict[int, str] = {}

    def add_instance(self, name: str, open_handle: Any, uri: str | None = None) -> FluxInstance:
        """A Flux instance for jobs of this run: ``open_handle()`` returns a new
        handle to it, ``uri`` is where its executor connects (None: ``FLUX_URI``)."""
        instance = FluxInstance(
            name,
            open_handle,
            flux_module=self.flux,
            options=self.options,
            run_id=self.run_id,
            owner=self.owner,
            events=self._events,
            wake=self._wake,
            uri=uri,
            jobspec_of=self.jobspec,
        )
        self.instances[name] = instance
        return instance

    @classmethod
    def from_settings(cls, settings: Any, run_id: str = "") -> FluxBackend:
        return cls(FluxOptions.from_settings(settings), run_id=run_id)

    # -- what the enclosing instance is, for callers and tests ------------------
    @property
    def handle(self) -> Any:
        """This thread's handle to the enclosing instance."""
        return self.enclosing.handle

    @property
    def executor(self) -> Any:
        """The enclosing instance's FluxExecutor."""
        return self.enclosing.executor

    @property
    def executor_restarts(self) -> int:
        return sum(instance.executor_restarts for instance in self.instances.values())

    @property
    def purged(self) -> int:
        return sum(instance.purged for instance in self.instances.values())

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
        self.enclosing.choose_bypass(self._hostnames, self.expiration())
        end_leftover_children(
            self.flux, self.handle, os.getcwd(), self.run_id, self.options.cancel_timeout
        )
        self._start_children(nodes)
        if self.options.follow_resources:
            self._journal_thread = follow_resource_journal(
                self.flux, since, self._journal_stop, self._push_resource_event
            )
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

    def _push_resource_event(self, event: BackendEvent) -> None:
        if isinstance(event, ResourceEvent):
            self.enclosing.resource_event(event)
        self._events.put(event)
        self._wake.wake()

    # -- routing ----------------------------------------------------------------
    def instance_for(self, placement: Placement) -> FluxInstance:
        """The child instance that owns all ``placement``'s ranks, else the enclosing one."""
        child = self._child_of(placement)
        return self.enclosing if child is None else self.instances[child.name]

    def _route(self, key: int, instance: FluxInstance) -> None:
        with self._routes_lock:
            self._routes[key] = instance

    def _routed(self, key: int) -> FluxInstance | None:
        with self._routes_lock:
            return self._routes.get(key)

    def _forget(self, events: list[BackendEvent]) -> list[BackendEvent]:
        if self._child_routes is not None:
            events = [self._from_child(event) for event in events]
            self._hold_for_lost_children(events)
        with self._routes_lock:
            for event in events:
                if isinstance(event, JobFinished):
                    self._routes.pop(event.key, None)
        return events

    # -- submission ---------------------------------------------------------------
    @property
    def supports_lookahead(self) -> bool:
        return self.options.lookahead

    def jobspec(self, spec: LaunchSpec, placement: Placement, depends_on: int | None = None) -> Any:
        """The jobspec of ``spec`` on ``placement`` (enclosing ranks), as its
        instance builds it (in a child's own ranks)."""
        child = self._child_of(placement)
        if child is None:
            jobspec = self.enclosing.build_jobspec(spec, placement, depends_on)
        else:
            instance = self.instances[child.name]
            jobspec = instance.build_jobspec(spec, local_placement(placement, child), depends_on)
        if self.children is not None:
            jobspec.environment = job_environment(jobspec.environment)
        return jobspec

    def urgency(self, spec: LaunchSpec) -> int:
        return self.enclosing.urgency(spec)

    def launch(self, spec: LaunchSpec, placement: Placement, after: int | None = None) -> str:
        instance = self.instance_for(placement)
        self._route(spec.key, instance)
        return instance.launch(spec, placement, after)

    def withdraw(self, key: int) -> bool:
        """Cancel job ``key`` if Flux has not started it; its result is ignored."""
        with self._routes_lock:
            if key in self._orphans:  # its child is gone, and the job with it
                self._orphans.discard(key)
                self._routes.pop(key, None)
                return True
        instance = self._routed(key)
        if instance is None or not instance.withdraw(key):
            return False
        with self._routes_lock:
            self._routes.pop(key, None)
        return True

    # -- adoption (leftovers of dead runs, in the enclosing instance) ------------
    def settle_leftovers(self, resumable: Collection[str]) -> None:
        self.enclosing.settle_leftovers(resumable)

    def find_running(self, backend_id: str) -> RunningJob | None:
        return self.enclosing.find_running(backend_id)

    def attach(self, spec: LaunchSpec, job: RunningJob) -> None:
        self._route(spec.key, self.enclosing)
        self.enclosing.attach(spec, job)

    # -- waiting ----------------------------------------------------------------
    @property
    def running_count(self) -> int:
        return sum(instance.running_count for instance in self.instances.values())

    def wake(self) -> None:
        self._wake.wake()

    def wait(self, timeout: float | None) -> list[BackendEvent]:
        self._check_recovering_children()
        for instance in self._live_instances():
            instance.housekeeping()
        events = self._drain()
        if events:
            return self._forget(events)
        self._wake.wait(timeout)
        return self._forget(self._drain())

    def _drain(self) -> list[BackendEvent]:
        events = []
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                return events

    # -- stopping ---------------------------------------------------------------
    def cancel_all(self) -> list[JobFinished]:
        for instance in self._live_instances():
            instance.cancel_jobs()
        deadline = time.monotonic() + self.options.cancel_timeout
        with self._routes_lock:
            orphans, self._orphans = self._orphans, set()
        finished: list[JobFinished] = [
            JobFinished(key, JobStatus.CANCELLED, "was cancelled (its child instance was lost)")
            for key in sorted(orphans)
        ]
        while self.running_count and time.monotonic() < deadline:
            finished.extend(e for e in self.wait(0.2) if isinstance(e, JobFinished))
        finished.extend(e for e in self._forget(self._drain()) if isinstance(e, JobFinished))
        if self.running_count:
            log.warning(
                f"matensemble: {self.running_count} Flux job(s) did not end within "
                f"{self.options.cancel_timeout:g} s of being cancelled."
            )
        return finished

    def close(self) -> None:
        self._journal_stop.set()
        try:
            if self.running_count:
                self.cancel_all()
            for name, instance in self.instances.items():
                if name in self._lost_children:
                    instance.executor.shutdown(wait=False, cancel_futures=True)
                else:
                    instance.close()
        finally:
            self._close_children()
        if self._journal_thread is not None:
            self._journal_thread.join(timeout=2.0)
        self._wake.close()
