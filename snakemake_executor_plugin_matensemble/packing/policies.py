"""Admission policies: which queued jobs start now (MatEnsemble's strategies).

A policy looks at the queue (priority order), the allocation's free cores/GPUs
per node and the running jobs, and starts jobs through
:meth:`AdmissionRound.start`. Policies are small classes registered by name;
users choose one with ``--matensemble-policy``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from .allocation import Allocation
from .nodes import Placement
from .packer import AdmissionRound
from .queue import JobTicket
from .resource_request import ResourceRequest
from .running import NEVER


class AdmissionPolicy(ABC):
    """Decides which queued jobs start in one admission round."""

    name: ClassVar[str]
    summary: ClassVar[str]

    @abstractmethod
    def select(self, round_: AdmissionRound) -> None:
        """Start jobs with ``round_.start(ticket, placement)``."""


class FifoPolicy(AdmissionPolicy):
    """Strict priority order: start jobs until the next one does not fit."""

    name = "fifo"
    summary = (
        "strict priority order: start jobs until the next one in line does not "
        "fit, then wait (no job ever overtakes another)"
    )

    def select(self, round_: AdmissionRound) -> None:
        while (head := round_.queue.best()) is not None:
            placement = round_.allocation.place(head.request)
            if placement is None:
                round_.note_blocked(head)
                return
            round_.start(head, placement)


@dataclass
class Reservation:
    """Resources promised to a starved job (EASY backfilling).

    ``shadow_time`` is when the starved job can start at the latest (running
    jobs ending at their walltimes); ``spare`` is what is free now and not
    promised. A job may backfill if it ends before ``shadow_time`` or fits in
    ``spare``. When the promise cannot be computed (running jobs without a
    runtime), nothing backfills: the starved job goes next.
    """

    shadow_time: float
    spare: Allocation | None

    @classmethod
    def for_job(cls, ticket: JobTicket, round_: AdmissionRound) -> Reservation:
        found = _earliest_fit(ticket.request, round_)
        if found is None:
            return cls(math.inf, None)
        shadow_time, promised = found
        spare = round_.allocation.copy()
        spare.withhold(promised)
        return cls(shadow_time, spare)

    def backfill(self, ticket: JobTicket, round_: AdmissionRound) -> Placement | None:
        walltime = ticket.request.walltime_s
        placement = None
        if walltime is not None and round_.now + walltime <= self.shadow_time:
            placement = round_.allocation.place(ticket.request)
        elif self.spare is not None:
            placement = self.spare.place(ticket.request)
        if placement is not None and self.spare is not None:
            self.spare.withhold(placement)
        return placement


def _earliest_fit(
    request: ResourceRequest, round_: AdmissionRound
) -> tuple[float, Placement] | None:
    """When and where ``request`` fits first if running jobs end at their
    walltimes, soonest first: ``(that end, the placement)``, or None.

    The same answer as giving every ending job's resources back in turn and
    trying to place after each (:func:`_give_back_each`), found cheaper: a
    request that needs empty nodes asks the packer's index of when each node
    empties (:func:`_when_nodes_empty`); others give resources back only on
    nodes where one node's share fits by count (:func:`_walk_roomy_nodes`).
    Requests spread over any nodes (several tasks, no ``nodes``) are judged by
    the sum over all nodes, so for them every job is given back.
    """
    future = round_.allocation.copy()
    ending = round_.ending()
    if request.nodes is None and not request.exclusive and request.tasks > 1:
        return _give_back_each(future, request, ending)
    if future.place(request) is not None:  # fits now: the first end is the answer
        return _give_back_each(future, request, ending)
    if round_.empties is not None and _needs_empty_nodes(request, future):
        found = _when_nodes_empty(request, round_, future)
        if found is not _UNKNOWN:
            return found
        future = round_.allocation.copy()
    return _walk_roomy_nodes(future, request, ending)


def _walk_roomy_nodes(
    future: Allocation, request: ResourceRequest, ending: Iterable[JobTicket]
) -> tuple[float, Placement] | None:
    """Give ending jobs back, by count until a node could hold a share of
    ``request`` ("roomy"), for real from then on; try to place only when a
    roomy node changed. A node that cannot hold a share is never chosen,
    whatever else it has, so its state does not matter."""
    need_cores, need_gpus, whole = future.share_need(request)
    #: rank -> [free cores, free GPUs, shares not given back yet, (cores, GPUs)]
    counted: dict[int, list] = {}
    roomy: set[int] = set()
    for done in ending:
        touched = False
        for share in done.placement.shares:
            rank = share.rank
            if rank in roomy:
                future.give_back(Placement((share,)))
                touched = True
                continue
            count = counted.get(rank)
            if count is None:
                room = future.room(rank)
                if room is None:  # drained or down: never chosen
                    continue
                count = counted[rank] = [room[0], room[1], [], room[2:]]
            count[0] += len(share.cores)
            count[1] += len(share.gpus)
            count[2].append(share)
            fits = count[0] >= need_cores and count[1] >= need_gpus
            if fits and whole:
                fits = (count[0], count[1]) == count[3]
            if fits:
                future.give_back(Placement(tuple(count[2])))
                del counted[rank]
                roomy.add(rank)
                touched = True
        if touched and (promised := future.place(request)) is not None:
            return done.expected_end, promised
    return None


#: :func:`_when_nodes_empty` cannot tell: walk instead
_UNKNOWN = object()


def _needs_empty_nodes(request: ResourceRequest, allocation: Allocation) -> bool:
    """Whether each node of ``request`` must be empty (all nodes alike): an
    exclusive request, or a share that needs every core of a node."""
    size = allocation.node_size
    if size is None:
        return False
    need_cores, need_gpus, whole = allocation.share_need(request)
    if need_cores > size[0] or need_gpus > size[1]:
        return False
    return whole or need_cores == size[0]


def _when_nodes_empty(request: ResourceRequest, round_: AdmissionRound, future: Allocation):
    """:func:`_earliest_fit` for a request that needs empty nodes: the end of
    the job after which enough nodes are empty (from the packer's index, and
    the jobs started in this round), and the placement then; None if never;
    ``_UNKNOWN`` if the index cannot tell."""
    wanted = (request.nodes or 1) - future.idle_count
    if wanted <= 0:
        return _UNKNOWN
    started = _started_on_nodes(round_.started)
    candidates = _first_to_empty(round_.empties, future, started, wanted)
    if len(candidates) < wanted:
        return None
    shadow = candidates[wanted - 1][0]
    for when, rank in candidates:
        if when > shadow:
            break
        held = round_.empties.holders(rank) + started.get(rank, ([], None))[0]
        for ticket in held:
            share = tuple(share for share in ticket.placement.shares if share.rank == rank)
            future.give_back(Placement(share))
        room = future.room(rank)
        if room is None or room[:2] != room[2:]:
            return _UNKNOWN
    promised = future.place(request)
    if promised is None:
        return _UNKNOWN
    return shadow[0], promised


def _started_on_nodes(started: list[JobTicket]) -> dict[int, tuple[list[JobTicket], tuple]]:
    """rank -> (jobs started this round there, when the last of them ends as
    ``(end, 1, i)``, after every running job that ends at the same time)."""
    on_nodes: dict[int, tuple[list[JobTicket], tuple]] = {}
    for i, ticket in enumerate(started):
        end = ticket.expected_end
        when = (end, 1, i) if end is not None else NEVER
        for rank in ticket.placement.ranks:
            jobs, last = on_nodes.get(rank, ([], when))
            on_nodes[rank] = ([*jobs, ticket], max(last, when))
    return on_nodes


def _first_to_empty(
    packer: Any, future: Allocation, started: dict[int, tuple], wanted: int
) -> list[tuple[tuple, int]]:
    """``(when, rank)`` of the first ``wanted`` usable nodes to empty, and of
    any that empty with the last of them (a job on several nodes), soonest first."""
    candidates = []
    for when, rank in packer.nodes_by_empty_time():
        if len(candidates) >= wanted and when > candidates[wanted - 1][0]:
            break
        if rank not in started and future.room(rank) is not None:
            candidates.append((when, rank))
    for rank, (_, when) in started.items():
        if future.room(rank) is None:
            continue
        held = packer.empties_at(rank)
        if held is not None:
            when = max(when, held)
        if when < NEVER:
            candidates.append((when, rank))
    candidates.sort()
    return candidates


def _give_back_each(
    future: Allocation, request: ResourceRequest, ending: Iterable[JobTicket]
) -> tuple[float, Placement] | None:
    for done in ending:
        future.give_back(done.placement)
        promised = future.place(request)
        if promised is not None:
            return done.expected_end, promised
    return None


class BackfillPolicy(AdmissionPolicy):
    """Start every queued job that fits, in priority order, with a starvation guard.

    A job that could not start for ``reserve_after`` seconds gets a reservation
    (EASY backfilling): from then on, other jobs start only where they cannot
    delay it.
    """

    name = "backfill"
    summary = (
        "in priority order, start every queued job that fits now; a job that "
        "waited longer than --matensemble-reserve-after seconds gets its "
        "resources reserved so small jobs cannot starve it (EASY backfilling)"
    )

    def __init__(self, reserve_after: float = 60.0):
        self.reserve_after = reserve_after

    def select(self, round_: AdmissionRound) -> None:
        blocked: set[tuple] = set()
        reservation: Reservation | None = None
        while not round_.allocation_full:
            ticket = round_.queue.best(blocked)
            if ticket is None:
                return
            if reservation is None:
                placement = round_.allocation.place(ticket.request)
            else:
                placement = reservation.backfill(ticket, round_)
            if placement is not None:
                round_.start(ticket, placement)
                continue
            blocked.add(ticket.request.shape)
            waited = round_.note_blocked(ticket)
            if reservation is None and waited >= self.reserve_after:
                reservation = Reservation.for_job(ticket, round_)


POLICIES: dict[str, type[AdmissionPolicy]] = {
    policy.name: policy for policy in (BackfillPolicy, FifoPolicy)
}


def make_policy(name: str, reserve_after: float) -> AdmissionPolicy:
    """The policy called ``name`` (a key of :data:`POLICIES`)."""
    if name == BackfillPolicy.name:
        return BackfillPolicy(reserve_after=reserve_after)
    return POLICIES[name]()
