"""The packer: holds every job Snakemake handed over and starts those that fit.

MatEnsemble's "submit until out of resources", done per node: the queue is
kept in line by a :class:`~.ordering.QueueOrder` (Snakemake priority first);
an :class:`~.policies.AdmissionPolicy` decides which queued jobs start now;
the :class:`~.allocation.Allocation` is updated in place when a job starts or
finishes; a
:class:`~.deadline.DeadlineGuard` keeps jobs that could not finish before the
allocation's end from starting.

One clock: every time the packer keeps (``queued_at``, ``blocked_since``,
``started_at``, ``expected_end``) is in the packer's ``clock``, monotonic
seconds by default. Epoch times from backends (a re-attached job's start) are
converted at the seam (:meth:`Packer.attach`).

The queue is in :mod:`.queue`, the running jobs' indexes (by end, by node)
in :mod:`.running`; here: admission, look-ahead chaining, requeue and finish.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .allocation import Allocation
from .deadline import DeadlineGuard
from .nodes import Placement
from .ordering import QueueOrder
from .queue import JobQueue, JobTicket
from .running import RunningJobs


@dataclass
class AdmissionRound:
    """What a policy may look at and do in one pass."""

    queue: JobQueue
    allocation: Allocation
    running: Iterable[JobTicket]
    now: float
    started: list[JobTicket] = field(default_factory=list)
    #: the running jobs with a known end, soonest first (ties: in the order
    #: they joined ``running``); default: sorted from ``running``
    by_end: Callable[[], Iterator[JobTicket]] | None = None
    #: the packer's index of when each node empties (see
    #: :meth:`Packer.nodes_by_empty_time`); None: not known
    empties: Any = None

    def ending(self) -> Iterator[JobTicket]:
        """Running and just-started jobs with a known end and a placement,
        soonest end first (ties: running before started, each in its order)."""
        if self.by_end is not None:
            running: Iterable[JobTicket] = self.by_end()
        else:
            running = sorted(
                (t for t in self.running if t.expected_end is not None),
                key=lambda t: t.expected_end,
            )
        started = sorted(
            (t for t in self.started if t.expected_end is not None),
            key=lambda t: t.expected_end,
        )
        merged = heapq.merge(running, started, key=lambda t: t.expected_end)
        return (t for t in merged if t.placement)

    def start(self, ticket: JobTicket, placement: Placement) -> None:
        self.queue.pop(ticket)
        self.allocation.take(placement)
        ticket.placement = placement
        ticket.started_at = self.now
        self.started.append(ticket)

    def note_blocked(self, ticket: JobTicket) -> float:
        """Mark ``ticket`` as unable to start; return how long it has waited so."""
        if ticket.blocked_since is None:
            ticket.blocked_since = self.now
        return self.now - ticket.blocked_since

    @property
    def allocation_full(self) -> bool:
        return self.allocation.free_cores == 0


class Packer(RunningJobs):
    """Queue + allocation + policy: decides which jobs start and where."""

    def __init__(
        self,
        allocation: Allocation,
        policy: Any,
        clock: Callable[[], float] = time.monotonic,
        deadline: DeadlineGuard | None = None,
        wall: Callable[[], float] = time.time,
        order: QueueOrder | None = None,
    ):
        self.allocation = allocation
        self.policy = policy
        #: the packer's clock: monotonic seconds
        self.clock = clock
        #: epoch seconds, only to convert backend times at the seam
        self.wall = wall
        self.queue = JobQueue(order)
        self._start_index()
        self.deadline = deadline if deadline is not None else DeadlineGuard(clock=clock, wall=wall)
        #: the earliest latest-start of a queued job (packer clock): before it,
        #: :meth:`expire` has nothing to do
        self._next_expiry = math.inf

    def enqueue(self, tickets: Iterable[JobTicket]) -> None:
        now = self.clock()
        for ticket in tickets:
            ticket.queued_at = now
            self.queue.push(ticket)
            self._next_expiry = min(self._next_expiry, self.deadline.latest_start(ticket))

    def expire(self, now: float | None = None) -> list[JobTicket]:
        """Remove and return the queued jobs that can no longer finish before the
        allocation's end (``now``: packer clock; default the clock's now).

        Cheap when nothing is due: the queue is scanned only once the earliest
        latest-start of a queued job has passed (or the end moved,
        :meth:`deadline_changed`).
        """
        now = self.clock() if now is None else now
        if now < self._next_expiry or not self.queue:
            return []
        expired = self.queue.remove_if(lambda t: now > self.deadline.latest_start(t))
        self._next_expiry = min(
            (self.deadline.latest_start(t) for t in self.queue), default=math.inf
        )
        return expired

    @property
    def next_expiry(self) -> float:
        """When (packer clock) the next queued job can no longer finish in time."""
        return self._next_expiry if self.queue else math.inf

    def deadline_changed(self) -> None:
        """The allocation's end moved: recompute when queued jobs expire."""
        self._next_expiry = min(
            (self.deadline.latest_start(t) for t in self.queue), default=math.inf
        )

    def admit(self, now: float | None = None) -> list[JobTicket]:
        """Start every job the policy admits now; returns them with placements.

        Call :meth:`expire` first with the same ``now`` (packer clock), so that
        no job that cannot finish before the allocation's end is admitted.
        """
        if not self.queue:
            return []
        round_ = AdmissionRound(
            self.queue,
            self.allocation,
            self.running.values(),  # a view: the policy does not change ``running``
            self.clock() if now is None else now,
            by_end=self.running_by_end,
            empties=self,
        )
        self.policy.select(round_)
        for ticket in round_.started:
            self._add_running(ticket)
        return round_.started

    def chain(self) -> list[JobTicket]:
        """Look-ahead: line queued jobs up behind running jobs of the same shape.

        A chained job is handed to the backend now, to start on its
        predecessor's resources the moment that ends (Flux: an ``afterany``
        dependency), which hides the backend's per-job start latency. Jobs are
        taken strictly in priority order, and only onto a job of identical
        shape, so look-ahead never lets a job overtake another or take
        resources a starved job is waiting for.
        """
        free: dict[tuple, list[JobTicket]] = {}
        for ticket in self.running.values():
            if (
                ticket.after is None
                and ticket.successor is None
                and ticket.placement
                and all(self.allocation.is_usable(rank) for rank in ticket.placement.ranks)
            ):
                free.setdefault(ticket.request.shape, []).append(ticket)
        chained = []
        while (head := self.queue.best()) is not None:
            candidates = free.get(head.request.shape)
            if not candidates:
                break
            predecessor = min(
                candidates, key=lambda t: (t.expected_end or float("inf"), t.started_at or 0)
            )
            if self.deadline.end is not None and not self._may_chain(head, predecessor):
                break
            candidates.remove(predecessor)
            self.queue.pop(head)
            head.after, predecessor.successor = predecessor, head
            head.placement = predecessor.placement
            self._add_running(head)
            chained.append(head)
        return chained

    def _may_chain(self, head: JobTicket, predecessor: JobTicket) -> bool:
        """With an allocation end: ``head`` starts when ``predecessor`` ends, so
        it must fit after that end. If that end is unknown, only a job whose own
        runtime is unknown (and which may start now) is chained: it takes the
        same chance as if it started now, and :meth:`late_chained` takes it back
        if its predecessor runs past its latest start."""
        ends = self._estimated_end(predecessor)
        if ends is not None:
            return self.deadline.fits(head, ends)
        return self.deadline.estimate(head) is None and self.deadline.fits(head, self.clock())

    def late_chained(self, now: float | None = None) -> list[JobTicket]:
        """Chained jobs (not started yet) that could no longer finish before the
        allocation's end if they started now (``now``: packer clock)."""
        if self.deadline.end is None:
            return []
        now = self.clock() if now is None else now
        return [
            t
            for t in self.running.values()
            if t.after is not None and now > self.deadline.latest_start(t)
        ]

    def _estimated_end(self, ticket: JobTicket) -> float | None:
        """When running ``ticket`` ends by its runtime estimate (packer clock)."""
        estimate = self.deadline.estimate(ticket)
        if ticket.started_at is None or estimate is None:
            return None
        return ticket.started_at + estimate

    def attach(self, ticket: JobTicket) -> Placement:
        """Count a job of an earlier run that still runs (``ticket.attach``, a
        :class:`~.backends.base.RunningJob`) as running where it runs.

        Its start comes from the backend in epoch seconds; it is converted to
        the packer's clock here, so that walltime reservations and the
        starvation guard see it like any other job.
        """
        running = ticket.attach
        placement = self.allocation.claim(
            list(running.ranks), running.cores_per_rank, running.gpus_per_rank
        )
        ran_for = max(0.0, self.wall() - float(running.started_at))
        self.adopt(ticket, placement, self.clock() - ran_for)
        return placement

    def adopt(self, ticket: JobTicket, placement: Placement, started_at: float) -> None:
        """Count a job that already runs as running on ``placement`` since
        ``started_at`` (packer clock, monotonic seconds)."""
        ticket.placement = placement
        ticket.started_at = started_at
        self._add_running(ticket)

    def requeue(self, ticket: JobTicket) -> None:
        """Put a running job that the backend took back (never started) in the
        queue again: its resources are given back (or kept by its predecessor),
        and a job chained behind it is requeued too."""
        successor = ticket.successor
        if successor is not None and successor.key in self.running:
            self.requeue(successor)
        if self._pop_running(ticket.key) is None:
            return
        if ticket.after is not None:
            ticket.after.successor = None
        elif ticket.placement:
            self.allocation.give_back(ticket.placement)
        ticket.after = ticket.successor = None
        ticket.placement = None
        ticket.started_at = None
        self.queue.push(ticket)
        self._next_expiry = min(self._next_expiry, self.deadline.latest_start(ticket))

    def finish(self, ticket: JobTicket) -> None:
        """A running job ended (or failed to launch): give its resources back,
        or hand them to the job chained behind it."""
        if self._pop_running(ticket.key) is None or not ticket.placement:
            return
        if ticket.after is not None:  # never started: the predecessor keeps them
            ticket.after.successor = None
            ticket.after = None
            return
        successor = ticket.successor
        if successor is not None and successor.key in self.running:
            successor.after = None
            successor.started_at = self.clock()
            self._push_end(successor)
            self._dirty.update(successor.placement.ranks)
            return
        self.allocation.give_back(ticket.placement)

    def withdraw_queued(self) -> list[JobTicket]:
        return self.queue.drain()

    @property
    def idle(self) -> bool:
        return not self.queue and not self.running
