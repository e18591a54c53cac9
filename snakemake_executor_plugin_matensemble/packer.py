"""The packer: holds every job Snakemake handed over and starts those that fit.

MatEnsemble's "submit until out of resources", done per node: the queue is
kept in Snakemake priority order; an :class:`~.policies.AdmissionPolicy`
decides which queued jobs start now; the :class:`~.allocation.Allocation` is
updated in place when a job starts or finishes.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .allocation import Allocation, Placement
from .request import ResourceRequest


@dataclass(eq=False)
class JobTicket:
    """One job in the packer, from queued to finished."""

    key: int
    request: ResourceRequest
    priority: int = 0
    #: Whatever the caller needs back (the Snakemake job, its command, ...).
    payload: Any = None
    queued_at: float = 0.0
    #: When this job first could not start although it was next in line.
    blocked_since: float | None = None
    started_at: float | None = None
    placement: Placement | None = None
    #: A running backend job to re-attach to instead of starting a new one.
    attach: Any = None
    #: Look-ahead: the running job whose resources this one takes when it ends.
    after: JobTicket | None = None
    #: Look-ahead: the job waiting to take this one's resources.
    successor: JobTicket | None = None

    @property
    def sort_key(self) -> tuple[int, int]:
        """Higher priority first, then first come first served."""
        return (-self.priority, self.key)

    @property
    def expected_end(self) -> float | None:
        """When a running job ends at the latest (its walltime), if known."""
        if self.started_at is None or self.request.walltime_s is None:
            return None
        return self.started_at + self.request.walltime_s


class JobQueue:
    """Queued jobs grouped by request shape, each group in priority order.

    Jobs of one shape are interchangeable for placement, so when the head of a
    shape does not fit, none of that shape does: a policy pass costs
    O(shapes + started jobs), not O(queued jobs).
    """

    def __init__(self) -> None:
        self._by_shape: dict[tuple, list[tuple[tuple[int, int], JobTicket]]] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[JobTicket]:
        """All queued jobs in priority order (for reports; O(n log n))."""
        entries = [entry for heap in self._by_shape.values() for entry in heap]
        return (ticket for _, ticket in sorted(entries, key=lambda e: e[0]))

    def push(self, ticket: JobTicket) -> None:
        heap = self._by_shape.setdefault(ticket.request.shape, [])
        heapq.heappush(heap, (ticket.sort_key, ticket))
        self._size += 1

    def best(self, skip_shapes: frozenset | set = frozenset()) -> JobTicket | None:
        """The highest-priority queued job whose shape is not in ``skip_shapes``."""
        best_entry = None
        for shape, heap in self._by_shape.items():
            if shape in skip_shapes:
                continue
            if best_entry is None or heap[0][0] < best_entry[0]:
                best_entry = heap[0]
        return None if best_entry is None else best_entry[1]

    def pop(self, ticket: JobTicket) -> None:
        """Remove ``ticket``, which must be the head of its shape."""
        shape = ticket.request.shape
        heap = self._by_shape[shape]
        if heap[0][1] is not ticket:
            raise ValueError("only the head of a shape can be popped")
        heapq.heappop(heap)
        if not heap:
            del self._by_shape[shape]
        self._size -= 1

    def drain(self) -> list[JobTicket]:
        """Remove and return every queued job, in priority order."""
        tickets = list(self)
        self._by_shape.clear()
        self._size = 0
        return tickets


@dataclass
class AdmissionRound:
    """What a policy may look at and do in one pass."""

    queue: JobQueue
    allocation: Allocation
    running: Iterable[JobTicket]
    now: float
    started: list[JobTicket] = field(default_factory=list)

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
        return all(not node.free_cores for node in self.allocation.nodes)


class Packer:
    """Queue + allocation + policy: decides which jobs start and where."""

    def __init__(
        self,
        allocation: Allocation,
        policy: Any,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.allocation = allocation
        self.policy = policy
        self.clock = clock
        self.queue = JobQueue()
        self.running: dict[int, JobTicket] = {}

    def enqueue(self, tickets: Iterable[JobTicket]) -> None:
        now = self.clock()
        for ticket in tickets:
            ticket.queued_at = now
            self.queue.push(ticket)

    def admit(self) -> list[JobTicket]:
        """Start every job the policy admits now; returns them with placements."""
        if not self.queue:
            return []
        round_ = AdmissionRound(
            self.queue, self.allocation, list(self.running.values()), self.clock()
        )
        self.policy.select(round_)
        for ticket in round_.started:
            self.running[ticket.key] = ticket
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
            if ticket.after is None and ticket.successor is None and ticket.placement:
                free.setdefault(ticket.request.shape, []).append(ticket)
        chained = []
        while (head := self.queue.best()) is not None:
            candidates = free.get(head.request.shape)
            if not candidates:
                break
            predecessor = min(
                candidates, key=lambda t: (t.expected_end or float("inf"), t.started_at or 0)
            )
            candidates.remove(predecessor)
            self.queue.pop(head)
            head.after, predecessor.successor = predecessor, head
            head.placement = predecessor.placement
            self.running[head.key] = head
            chained.append(head)
        return chained

    def adopt(self, ticket: JobTicket, placement: Placement, started_at: float) -> None:
        """Count a job that already runs (re-attached) as running on ``placement``."""
        ticket.placement = placement
        ticket.started_at = started_at
        self.running[ticket.key] = ticket

    def finish(self, ticket: JobTicket) -> None:
        """A running job ended (or failed to launch): give its resources back,
        or hand them to the job chained behind it."""
        if self.running.pop(ticket.key, None) is None or not ticket.placement:
            return
        if ticket.after is not None:  # never started: the predecessor keeps them
            ticket.after.successor = None
            ticket.after = None
            return
        successor = ticket.successor
        if successor is not None and successor.key in self.running:
            successor.after = None
            successor.started_at = self.clock()
            return
        self.allocation.give_back(ticket.placement)

    def withdraw_queued(self) -> list[JobTicket]:
        return self.queue.drain()

    @property
    def idle(self) -> bool:
        return not self.queue and not self.running
