"""The packer's queue: one ticket per job, queued jobs grouped by request shape.

A :class:`JobTicket` follows one job from queued to finished; the
:class:`JobQueue` keeps queued tickets in line by a
:class:`~.ordering.QueueOrder` (Snakemake priority first), one heap per
request shape, so that a policy pass costs O(shapes), not O(queued jobs).
Times are on the packer's clock (monotonic seconds).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .nodes import Placement
from .ordering import ArrivalOrder, QueueOrder
from .resource_request import ResourceRequest

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
