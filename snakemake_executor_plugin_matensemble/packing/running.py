"""The running jobs of the packer, indexed by when they end and by node.

What the backfill reservation asks the packer: the running jobs soonest to
end first (:meth:`RunningJobs.running_by_end`), when each node empties
(:meth:`RunningJobs.nodes_by_empty_time`) and who holds it. Both are heaps
whose stale entries are dropped as they are met; ``running`` changed behind
the packer's back (tests, re-attach) is re-indexed from scratch.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator

from .queue import JobTicket

#: When a node never empties: a job there has no known end.
NEVER = (math.inf, 2, 0)


class RunningJobs:
    """The packer's running jobs and their indexes (a part of :class:`~.packer.Packer`)."""

    def _start_index(self) -> None:
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
