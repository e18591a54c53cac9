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
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ..intake.request import ResourceRequest
from .allocation import Allocation, Placement
from .deadline import DeadlineGuard
from .ordering import ArrivalOrder, QueueOrder

#: When a node never empties: a job there has no known end.
NEVER = (math.inf, 2, 0)

#: What the caller keeps with a ticket (the executor: its ``intake.Submission``).
PayloadT = TypeVar("PayloadT")


@dataclass(eq=False)
class JobTicket(Generic[PayloadT]):
    """One job in the packer, from queued to finished; ``payload`` is the
    caller's, typed by the caller (``JobTicket[Submission]``)."""

    key: int
    request: ResourceRequest
    priority: int = 0
    #: What the caller needs back (the Snakemake job, its command, ...).
    payload: PayloadT | None = None
    #: The rule's name (for runtime estimates from earlier runs' journals).
    rule: str = ""
    #: When it was queued (packer clock, monotonic seconds).
    queued_at: float = 0.0
    #: When this job first could not start although it was next in line
    #: (packer clock, monotonic seconds).
    blocked_since: float | None = None
    #: When it started (packer clock, monotonic seconds).
    started_at: float | None = None
    placement: Placement | None = None
    #: A running backend job to re-attach to instead of starting a new one.
    attach: Any = None
    #: Look-ahead: the running job whose resources this one takes when it ends.
    after: JobTicket | None = None
    #: Look-ahead: the job waiting to take this one's resources.
    successor: JobTicket | None = None

    @property
    def expected_end(self) -> float | None:
        """When a running job ends at the latest (its walltime), if known
        (packer clock, monotonic seconds)."""
        if self.started_at is None or self.request.walltime_s is None:
            return None
        return self.started_at + self.request.walltime_s


class JobQueue:
    """Queued jobs grouped by request shape, each group in line by ``order``
    (default: Snakemake priority, then arrival).

    Jobs of one shape are interchangeable for placement, so when the head of a
    shape does not fit, none of that shape does: a policy pass costs
    O(shapes + started jobs), not O(queued jobs).
    """

    def __init__(self, order: QueueOrder | None = None) -> None:
        self.order = order if order is not None else ArrivalOrder()
        self._by_shape: dict[tuple, list[tuple[tuple, JobTicket]]] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[JobTicket]:
        """All queued jobs in line order (for reports; O(n log n))."""
        entries = [entry for heap in self._by_shape.values() for entry in heap]
        return (ticket for _, ticket in sorted(entries, key=lambda e: e[0]))

    def push(self, ticket: JobTicket) -> None:
        heap = self._by_shape.setdefault(ticket.request.shape, [])
        heapq.heappush(heap, (self.order.key(ticket), ticket))
        self._size += 1

    def best(self, skip_shapes: frozenset | set = frozenset()) -> JobTicket | None:
        """The first queued job in line whose shape is not in ``skip_shapes``."""
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
        """Remove and return every queued job, in line order."""
        tickets = list(self)
        self._by_shape.clear()
        self._size = 0
        return tickets

    def remove_if(self, condition: Callable[[JobTicket], bool]) -> list[JobTicket]:
        """Remove and return the queued jobs for which ``condition`` holds (O(n))."""
        removed = []
        for shape, heap in list(self._by_shape.items()):
            kept = []
            for entry in heap:
                (removed if condition(entry[1]) else kept).append(entry)
            if len(kept) == len(heap):
                continue
            if kept:
                heapq.heapify(kept)
                self._by_shape[shape] = kept
            else:
                del self._by_shape[shape]
        self._size -= len(removed)
        return [ticket for _, ticket in sorted(removed, key=lambda entry: entry[0])]


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


class Packer:
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
        self.running: dict[int, JobTicket] = {}
        #: running job key -> when it joined ``running`` (a counter)
        self._joined: dict[int, int] = {}
        self._joins = 0
        #: (expected end, joined, push, ticket, started at) of running jobs: a heap, with
        #: stale entries dropped as they are met (see :meth:`running_by_end`)
        self._ends: list[tuple[float, int, int, JobTicket, float]] = []
        self._pushes = 0
        #: rank -> key -> running job with a share there (when each node empties)
        self._on_node: dict[int, dict[int, JobTicket]] = {}
        #: ranks whose jobs changed since their empty time was last pushed
        self._dirty: set[int] = set()
        #: (when the node empties, rank): a heap; stale entries are dropped when met
        self._empties: list[tuple[tuple, int]] = []
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

    # -- running jobs by their end ----------------------------------------------
    def _add_running(self, ticket: JobTicket) -> None:
        """Put ``ticket`` in ``running`` (a key already there keeps its place)."""
        if ticket.key not in self.running or ticket.key not in self._joined:
            self._joins += 1
            self._joined[ticket.key] = self._joins
        self.running[ticket.key] = ticket
        self._push_end(ticket)
        for share in ticket.placement.shares if ticket.placement else ():
            self._on_node.setdefault(share.rank, {})[ticket.key] = ticket
            self._dirty.add(share.rank)

    def _push_end(self, ticket: JobTicket) -> None:
        end = ticket.expected_end
        if end is not None:
            self._pushes += 1
            entry = (end, self._joined[ticket.key], self._pushes, ticket, ticket.started_at)
            heapq.heappush(self._ends, entry)

    def _pop_running(self, key: int) -> JobTicket | None:
        self._joined.pop(key, None)
        ticket = self.running.pop(key, None)
        if ticket is not None and ticket.placement:
            for share in ticket.placement.shares:
                on_node = self._on_node.get(share.rank)
                if on_node is not None:
                    on_node.pop(key, None)
                self._dirty.add(share.rank)
        return ticket

    def _live(self, entry: tuple[float, int, int, JobTicket, float]) -> bool:
        """Whether a heap entry still stands for a running job as it runs now."""
        _, joined, _, ticket, started_at = entry
        key = ticket.key
        return (
            self._joined.get(key) == joined
            and ticket.started_at == started_at
            and self.running.get(key) is ticket
        )

    def _reindex_ends(self) -> None:
        """Rebuild the heap: from ``running`` itself if it was changed behind
        the packer's back, else without the stale entries."""
        if self._joined.keys() != self.running.keys():
            self._joined = {key: i for i, key in enumerate(self.running)}
            self._joins = len(self._joined)
            self._ends = []
            self._on_node = {}
            for ticket in self.running.values():
                self._push_end(ticket)
                for share in ticket.placement.shares if ticket.placement else ():
                    self._on_node.setdefault(share.rank, {})[ticket.key] = ticket
            self._dirty = set(self._on_node)
            self._empties = []
            return
        self._ends = [entry for entry in self._ends if self._live(entry)]
        heapq.heapify(self._ends)

    def empties_at(self, rank: int) -> tuple | None:
        """When node ``rank`` empties if running jobs end at their walltimes:
        ``(end, 0, joined)`` of its last job to end, in the order of
        :meth:`running_by_end`; :data:`NEVER` if one of its jobs has no known
        end; None if no running job holds a share there."""
        last = None
        for key, ticket in self._on_node.get(rank, {}).items():
            if ticket.after is not None:  # chained, not started: holds nothing itself
                continue
            end = ticket.expected_end
            if end is None:
                return NEVER
            order = (end, 0, self._joined.get(key, 0))
            if last is None or order > last:
                last = order
        return last

    def nodes_by_empty_time(self) -> Iterator[tuple[tuple, int]]:
        """``(when, rank)`` of the nodes running jobs hold, soonest to empty
        first (see :meth:`empties_at`), without those that never empty."""
        if len(self._joined) != len(self.running):  # changed behind the packer's back
            self._reindex_ends()
        for rank in self._dirty:
            when = self.empties_at(rank)
            if when is not None and when < NEVER:
                heapq.heappush(self._empties, (when, rank))
        self._dirty = set()
        if len(self._empties) > 2 * len(self._on_node) + 64:
            self._empties = [e for e in self._empties if self.empties_at(e[1]) == e[0]]
            heapq.heapify(self._empties)
        empties = self._empties
        while empties and self.empties_at(empties[0][1]) != empties[0][0]:
            heapq.heappop(empties)  # nodes whose jobs ended or changed: mostly on top
        heap = list(empties)
        seen: set[int] = set()
        while heap:
            when, rank = heapq.heappop(heap)
            if rank not in seen and self.empties_at(rank) == when:
                seen.add(rank)
                yield when, rank

    def holders(self, rank: int) -> list[JobTicket]:
        """The running jobs that hold a share of node ``rank`` (not chained
        jobs waiting for a predecessor's share)."""
        return [t for t in self._on_node.get(rank, {}).values() if t.after is None]

    def running_by_end(self) -> Iterator[JobTicket]:
        """Running jobs with a known end, soonest first (ties: in the order
        they joined ``running``); O(running) copy, then O(log n) per job read."""
        if len(self._joined) != len(self.running) or len(self._ends) > 2 * len(self.running) + 64:
            self._reindex_ends()
        live, pop = self._live, heapq.heappop
        while self._ends and not live(self._ends[0]):  # jobs that ended: mostly on top
            pop(self._ends)
        heap = list(self._ends)
        while heap:
            entry = pop(heap)
            if live(entry):
                yield entry[3]

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
