"""The Flux backend's child instances: starting them at discovery, routing a
placement to the child that owns its ranks, a lost child (its ranks down, its
started jobs failed once it is gone, its unstarted jobs placed again), events
in the enclosing instance's terms, and closing them.

A mixin of :class:`~.backend.FluxBackend` (the router): it works on the
router's instances, routes and event queue; the pure parts are in
:mod:`.children` (``auto``, ``routing``, ``ending``, ``leftovers``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import replace

from ...errors import SettingsError
from ...packing.nodes import NodeSpec, Placement
from ..base import (
    BackendEvent,
    JobFinished,
    JobStarted,
    LaunchError,
    ResourceEvent,
    ResourceEventKind,
)
from .children.auto import SETTING as CHILDREN_SETTING
from .children.auto import choose_children
from .children.child import ChildInstance
from .children.childset import ChildSet
from .children.ending import end_child_job
from .children.groups import idset
from .children.routing import ChildRoutes, enclosing_ranks, local_hostnames
from .children.watch import ChildLoss
from .instance import FluxInstance
from .resources import expiration_from_rset

log = logging.getLogger("snakemake.logging.matensemble.flux")


class ChildRoutingMixin:
    """The router's part that concerns child instances (state set by :meth:`_init_children`)."""

    def _init_children(self) -> None:
        #: the run's child instances (None: none), and routing over them
        self.children: ChildSet | None = None
        self._child_routes: ChildRoutes | None = None
        #: child name -> why it was lost (its jobs failed once, its ranks went down)
        self._lost_children: dict[str, str] = {}
        #: jobs of a lost child that had not started: withdrawn without Flux
        self._orphans: set[int] = set()
        #: child name -> set once a lost child's processes are gone
        self._children_gone: dict[str, threading.Event] = {}

    # -- child instances ----------------------------------------------------------
    def _start_children(self, nodes: list[NodeSpec]) -> None:
        """Start the children ``--matensemble-flux-children`` asks for over the
        usable ``nodes`` (the decision and its reason said once)."""
        setting = self.options.children
        try:
            choice = choose_children(
                setting,
                nodes=len(nodes),
                brokers=int(self.handle.attr_get("size")),
                highest_rank=max(node.rank for node in nodes),
                bypass=self.enclosing.bypass,
            )
        except ValueError as error:
            problem, fix = error.args
            raise SettingsError(CHILDREN_SETTING, setting, problem, fix) from None
        if not choice.count:
            log.info(f"matensemble: no child Flux instances ({choice.reason}).")
            return
        log.info(f"matensemble: starting {choice.count} child Flux instances ({choice.reason}).")
        from .children.childset import start_children

        began = time.monotonic()
        try:
            children = start_children(
                self.handle,
                choice.count,
                ranks=[node.rank for node in nodes],
                attributes={**self.owner, "run": self.run_id},
            )
        except (RuntimeError, ValueError, OSError) as error:
            if str(setting).strip().lower() == "auto":
                log.warning(
                    f"matensemble: the child Flux instances did not start ({error}); the run "
                    "goes on in the enclosing instance alone."
                )
                return
            raise LaunchError(
                f"the {choice.count} child Flux instance(s) did not start ({error}); nothing "
                "was submitted. --matensemble-flux-children off runs without them"
            ) from error
        groups = ", ".join(f"{c.name} on ranks {idset(c.ranks)}" for c in children.children)
        log.info(
            f"matensemble: started {len(children.children)} child Flux instances in "
            f"{time.monotonic() - began:.1f} s: {groups}."
        )
        self.use_children(children)

    def use_children(self, children: ChildSet) -> None:
        """Run the jobs placed on a child's nodes in that child: one
        :class:`FluxInstance` per child (alloc-bypass chosen per child, with
        the child's own ranks and host names), and the watch for lost children."""
        routes = ChildRoutes(children.children)
        for child in children.children:
            instance = self.add_instance(child.name, child.open, uri=child.uri)
            instance.choose_bypass(
                local_hostnames(self._hostnames, child), self._child_end(instance)
            )
        self.children, self._child_routes = children, routes
        children.watch(self._on_child_lost)

    def _child_end(self, instance: FluxInstance) -> float | None:
        """When a child instance ends (its own R), never after the enclosing one."""
        rset = self.flux.kvs.get(instance.handle, "resource.R")
        rset = json.loads(rset) if isinstance(rset, str) else rset
        ends = [expiration_from_rset(rset), self.expiration()]
        known = [end for end in ends if end is not None]
        return min(known) if known else None

    def _child_of(self, placement: Placement) -> ChildInstance | None:
        routes = self._child_routes
        return None if routes is None else routes.child_for(placement)

    def _on_child_lost(self, loss: ChildLoss) -> None:
        """The watcher saw a child's job end in the enclosing instance."""
        self._lose_child(loss.name, loss.reason)

    def _lose_child(self, name: str, why: str) -> bool:
        """Child ``name`` is gone: its ranks leave the allocation, its started
        jobs fail once with the reason once its job in the enclosing instance has
        ended (so no retry runs beside them), and its jobs not started are placed
        again (any thread; said once)."""
        with self._routes_lock:
            if name in self._lost_children or self._child_routes is None:
                return False
            self._lost_children[name] = why
            gone = self._children_gone[name] = threading.Event()
        child = self._child_routes.children[name]
        nodes = idset(child.ranks)
        log.error(f"matensemble: child Flux instance {name} (ranks {nodes}) was lost: {why}.")
        reason = (
            f"was lost with child Flux instance {name} (ranks {nodes}): {why}; --retries "
            "reruns it on the nodes left"
        )
        failed, unstarted = self.instances[name].abandon(reason, child.ranks)
        if child.jobid is not None:  # its jobs are gone before they are reported
            end_child_job(self.flux, self.handle, child.jobid, reason, self.options.cancel_timeout)
        gone.set()
        with self._routes_lock:  # placed again by the dispatcher (it withdraws them)
            self._orphans.update(unstarted)
        self._events.put(
            ResourceEvent(
                ResourceEventKind.DOWN,
                child.ranks,
                f"child Flux instance {name} was lost: {why}",
                time.time(),
            )
        )
        for finished in failed:
            self._events.put(finished)
        self._wake.wake()
        return True

    def _check_recovering_children(self) -> None:
        """A child whose executor died (its relay, or the child itself): if the
        child's job no longer runs, the child is lost; else its jobs are
        re-attached by the instance's recovery (dispatcher thread)."""
        routes = self._child_routes
        if routes is None:
            return
        for child in routes.children.values():
            instance = self.instances[child.name]
            if child.jobid is None or child.name in self._lost_children:
                continue
            if not instance.recovering:
                continue
            try:
                state = self.flux.job.get_job(self.handle, child.jobid)["state"]
            except OSError as error:  # unknown: the instance's own recovery decides
                log.debug(f"matensemble: state of child {child.name}'s job: {error}")
                continue
            if state != "RUN":
                self._lose_child(child.name, f"its job in the enclosing instance is {state}")

    def _live_instances(self) -> list[FluxInstance]:
        return [i for name, i in self.instances.items() if name not in self._lost_children]

    def _hold_for_lost_children(self, events: list[BackendEvent]) -> None:
        """An end of a lost child's job (sent before the child was abandoned) is
        reported only once the child's processes are gone: its retry must never
        run beside it."""
        for event in events:
            instance = self._routed(event.key) if isinstance(event, JobFinished) else None
            gone = None if instance is None else self._children_gone.get(instance.name)
            if gone is not None:
                gone.wait(self.options.cancel_timeout)

    def _from_child(self, event: BackendEvent) -> BackendEvent:
        """A job event in the enclosing instance's terms: a start names its child;
        a node lost under a job of a child loses the whole child (its keepers end
        it), so the event names all the child's ranks."""
        if not isinstance(event, JobStarted | JobFinished):
            return event
        instance = self._routed(event.key)
        if instance is None or instance is self.enclosing:
            return event
        if isinstance(event, JobStarted):
            return replace(event, instance=instance.name)
        if not event.lost_ranks or self._child_routes is None:
            return event
        child = self._child_routes.children[instance.name]
        lost = enclosing_ranks(event.lost_ranks, child)
        self._lose_child(child.name, f"its node(s) at ranks {idset(lost) or '?'} failed")
        return replace(event, lost_ranks=child.ranks)

    def _close_children(self) -> None:
        """Cancel the run's children and wait until they are gone (said how long)."""
        if self.children is None:
            return
        began = time.monotonic()
        left = self.children.close(self.handle)
        log.info(
            f"matensemble: child Flux instances ended in {time.monotonic() - began:.1f} s"
            + (f"; still active: {', '.join(left)}" if left else ".")
        )
