"""Per-node model of the allocation: which cores and GPUs of which node are free.

Free resources are tracked per node (never as aggregate counts): a 4-core task
does not "fit" into two nodes with 2 free cores each. The model is updated in
place when a job starts or finishes, so no resource query is needed per
submission.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .cpulist import format_cpu_list
from .request import ResourceRequest


@dataclass(frozen=True)
class NodeSpec:
    """One node (Flux broker rank, or the local machine) and what it has."""

    rank: int
    name: str
    cores: tuple[int, ...]
    gpus: tuple[str, ...] = ()


@dataclass(frozen=True)
class NodeShare:
    """The part of one node given to a job: ``tasks`` tasks on these cores/GPUs."""

    rank: int
    tasks: int
    cores: tuple[int, ...]
    gpus: tuple[str, ...] = ()


@dataclass(frozen=True)
class Placement:
    """Where a job runs: one share per node it uses."""

    shares: tuple[NodeShare, ...]

    @property
    def ranks(self) -> tuple[int, ...]:
        return tuple(share.rank for share in self.shares)

    @property
    def ncores(self) -> int:
        return sum(len(share.cores) for share in self.shares)

    @property
    def ngpus(self) -> int:
        return sum(len(share.gpus) for share in self.shares)

    def describe(self) -> str:
        return "; ".join(
            f"rank {s.rank}: cores {format_cpu_list(s.cores)}"
            + (f", gpus {','.join(s.gpus)}" if s.gpus else "")
            for s in self.shares
        )


@dataclass
class NodeState:
    """Free cores and GPU ids of one node."""

    spec: NodeSpec
    free_cores: list[int] = field(default_factory=list)
    free_gpus: list[str] = field(default_factory=list)
    #: why no new job may start here (drained), or None
    drained: str | None = None
    #: the node went down: nothing runs here until it is up again
    down: bool = False

    @property
    def usable(self) -> bool:
        """Whether new jobs may be placed here (not drained, not down)."""
        return self.drained is None and not self.down

    @classmethod
    def idle(cls, spec: NodeSpec) -> NodeState:
        return cls(spec, sorted(spec.cores), list(spec.gpus))

    @property
    def is_idle(self) -> bool:
        return len(self.free_cores) == len(self.spec.cores) and len(self.free_gpus) == len(
            self.spec.gpus
        )

    def task_slots(self, request: ResourceRequest) -> int:
        """How many tasks of ``request`` fit on this node right now."""
        slots = len(self.free_cores) // request.cores_per_task
        if request.gpus_per_task:
            slots = min(slots, len(self.free_gpus) // request.gpus_per_task)
        return slots

    def share_for(self, tasks: int, request: ResourceRequest) -> NodeShare:
        """The lowest free cores/GPUs for ``tasks`` tasks (does not take them)."""
        if request.exclusive:
            return NodeShare(self.spec.rank, tasks, tuple(self.free_cores), tuple(self.free_gpus))
        ncores = tasks * request.cores_per_task
        ngpus = tasks * request.gpus_per_task
        return NodeShare(
            self.spec.rank,
            tasks,
            tuple(self.free_cores[:ncores]),
            tuple(self.free_gpus[:ngpus]),
        )

    def take(self, share: NodeShare) -> None:
        cores, gpus = set(share.cores), set(share.gpus)
        if not cores <= set(self.free_cores) or not gpus <= set(self.free_gpus):
            raise ValueError(
                f"rank {self.spec.rank}: share {share} is not free "
                f"(free cores {self.free_cores}, free gpus {self.free_gpus})"
            )
        self.free_cores = [c for c in self.free_cores if c not in cores]
        self.free_gpus = [g for g in self.free_gpus if g not in gpus]

    def give_back(self, share: NodeShare) -> None:
        self.free_cores = sorted(set(self.free_cores) | set(share.cores))
        order = {gpu: i for i, gpu in enumerate(self.spec.gpus)}
        self.free_gpus = sorted(set(self.free_gpus) | set(share.gpus), key=order.get)


class Allocation:
    """All nodes of the allocation with their free resources.

    ``hints``: what the backend wants said when a request can never fit, by
    what is short (``"cores"``, ``"gpus"``, ``"nodes"``): where that resource
    comes from and how to get more (the local backend names its
    ``--matensemble-local-*`` flags). The allocation itself stays
    backend-neutral. Raises :class:`ValueError` for an empty node list.
    """

    def __init__(self, nodes: Iterable[NodeSpec], hints: Mapping[str, str] | None = None):
        self.specs = tuple(nodes)
        self.hints = dict(hints or {})
        if not self.specs:
            raise ValueError("an allocation needs at least one node")
        self.nodes = [NodeState.idle(spec) for spec in self.specs]
        self._by_rank = {state.spec.rank: state for state in self.nodes}
        self._never_fits: dict[tuple, tuple[str, object, str] | None] = {}

    # -- totals -----------------------------------------------------------------
    @property
    def total_cores(self) -> int:
        return sum(len(spec.cores) for spec in self.specs)

    @property
    def total_gpus(self) -> int:
        return sum(len(spec.gpus) for spec in self.specs)

    @property
    def free_cores(self) -> int:
        """Free cores where new jobs may start (drained and down nodes excluded)."""
        return sum(len(node.free_cores) for node in self.nodes if node.usable)

    @property
    def free_gpus(self) -> int:
        return sum(len(node.free_gpus) for node in self.nodes if node.usable)

    @property
    def usable_nodes(self) -> list[NodeState]:
        return [node for node in self.nodes if node.usable]

    # -- drained and lost nodes -------------------------------------------------
    def drain(self, ranks: Iterable[int], reason: str = "") -> list[int]:
        """No new jobs on ``ranks`` (running ones go on); returns the ranks of
        this allocation that were usable before."""
        changed = []
        for rank in ranks:
            node = self._by_rank.get(rank)
            if node is not None:
                if node.usable:
                    changed.append(rank)
                node.drained = reason or "drained"
        return changed

    def undrain(self, ranks: Iterable[int]) -> list[int]:
        """``ranks`` take new jobs again (unless down); returns those that do now."""
        changed = []
        for rank in ranks:
            node = self._by_rank.get(rank)
            if node is not None and node.drained is not None:
                node.drained = None
                if node.usable:
                    changed.append(rank)
        return changed

    def mark_down(self, ranks: Iterable[int]) -> list[int]:
        """``ranks`` are gone (with what ran there); returns those newly down."""
        changed = []
        for rank in ranks:
            node = self._by_rank.get(rank)
            if node is not None and not node.down:
                node.down = True
                changed.append(rank)
        return changed

    def mark_up(self, ranks: Iterable[int]) -> list[int]:
        """``ranks`` are back; returns those that were down."""
        changed = []
        for rank in ranks:
            node = self._by_rank.get(rank)
            if node is not None and node.down:
                node.down = False
                changed.append(rank)
        return changed

    def is_usable(self, rank: int) -> bool:
        node = self._by_rank.get(rank)
        return node is not None and node.usable

    def unusable(self) -> dict[int, str]:
        """rank -> why no job may start there (drained: the reason; down)."""
        return {
            node.spec.rank: ("down" if node.down else f"drained ({node.drained})")
            for node in self.nodes
            if not node.usable
        }

    def node_name(self, rank: int) -> str:
        node = self._by_rank.get(rank)
        return node.spec.name if node is not None else f"rank{rank}"

    def describe(self) -> str:
        cores = sorted({len(s.cores) for s in self.specs})
        gpus = sorted({len(s.gpus) for s in self.specs})
        return (
            f"{len(self.specs)} node(s), {self.total_cores} cores "
            f"({'/'.join(map(str, cores))} per node), {self.total_gpus} GPUs "
            f"({'/'.join(map(str, gpus))} per node)"
        )

    def copy(self) -> Allocation:
        return copy.deepcopy(self)

    def empty_copy(self) -> Allocation:
        return Allocation(self.specs, self.hints)

    # -- placement --------------------------------------------------------------
    def place(self, request: ResourceRequest) -> Placement | None:
        """Where ``request`` would run now, or None if it does not fit now."""
        if request.exclusive:
            return self._place_exclusive(request)
        if request.nodes is not None:
            return self._place_on_n_nodes(request, request.nodes)
        return self._place_anywhere(request)

    def _place_exclusive(self, request: ResourceRequest) -> Placement | None:
        count = request.nodes or 1
        per_node = _split(request.tasks, count)
        return _fit_nodes([n for n in self.usable_nodes if n.is_idle], per_node, request)

    def _place_on_n_nodes(self, request: ResourceRequest, count: int) -> Placement | None:
        return _fit_nodes(self.usable_nodes, _split(request.tasks, count), request)

    def _place_anywhere(self, request: ResourceRequest) -> Placement | None:
        slots = [(node.task_slots(request), node) for node in self.usable_nodes]
        # Best fit: the node that fits all tasks with the fewest cores left over,
        # which keeps whole nodes free for big jobs.
        whole = [
            (len(node.free_cores), node.spec.rank, node) for n, node in slots if n >= request.tasks
        ]
        if whole:
            node = min(whole)[2]
            return Placement((node.share_for(request.tasks, request),))
        if sum(n for n, _ in slots) < request.tasks:
            return None
        # Spread over as few nodes as possible: the roomiest first.
        shares = []
        remaining = request.tasks
        for n, node in sorted(slots, key=lambda item: (-item[0], item[1].spec.rank)):
            if remaining == 0 or n == 0:
                break
            tasks = min(n, remaining)
            shares.append(node.share_for(tasks, request))
            remaining -= tasks
        return Placement(tuple(sorted(shares, key=lambda s: s.rank)))

    # -- bookkeeping ------------------------------------------------------------
    def take(self, placement: Placement) -> None:
        for share in placement.shares:
            self._by_rank[share.rank].take(share)

    def give_back(self, placement: Placement) -> None:
        for share in placement.shares:
            self._by_rank[share.rank].give_back(share)

    def claim(self, ranks: list[int], cores_per_rank: int, gpus_per_rank: int) -> Placement:
        """Take what a job that already runs holds (re-attach): the lowest free
        cores/GPUs of each rank, as many as are free."""
        shares = []
        for rank in ranks:
            node = self._by_rank.get(rank)
            if node is None:
                continue
            share = NodeShare(
                rank,
                1,
                tuple(node.free_cores[:cores_per_rank]),
                tuple(node.free_gpus[:gpus_per_rank]),
            )
            node.take(share)
            shares.append(share)
        return Placement(tuple(shares))

    def withhold(self, placement: Placement) -> None:
        """Mark whatever of ``placement`` is free now as not free (reservations)."""
        for share in placement.shares:
            node = self._by_rank[share.rank]
            cores, gpus = set(share.cores), set(share.gpus)
            node.free_cores = [c for c in node.free_cores if c not in cores]
            node.free_gpus = [g for g in node.free_gpus if g not in gpus]

    def why_never_fits(self, request: ResourceRequest) -> tuple[str, object, str] | None:
        """If ``request`` cannot run even on the idle allocation, say why.

        Returns ``(field, value, problem)`` naming the Snakemake resource to blame,
        or None when the request fits the idle allocation; ``problem`` ends with
        the backend's hint for what is short (see ``hints``). Answers are cached
        per request shape: the nodes never change.
        """
        key = (*request.shape, request.cores_field, request.gpus_field)
        if key not in self._never_fits:
            problem = self._why_never_fits(request)
            if problem is not None:
                field, value, text, short = problem
                hint = self.hints.get(short)
                problem = (field, value, f"{text}: {hint}" if hint else text)
            self._never_fits[key] = problem
        return self._never_fits[key]

    def _why_never_fits(self, request: ResourceRequest) -> tuple[str, object, str, str] | None:
        """``(field, value, problem, what is short)``, or None if it fits."""
        if self.empty_copy().place(request) is not None:
            return None
        max_cores = max(len(s.cores) for s in self.specs)
        max_gpus = max(len(s.gpus) for s in self.specs)
        if request.cores_per_task > max_cores:
            return (
                request.cores_field,
                request.cores_per_task,
                f"is more cores than any node has (largest node: {max_cores} cores)",
                "cores",
            )
        if request.gpus_per_task > max_gpus:
            return (
                request.gpus_field,
                request.gpus_per_task
                if request.gpus_field == "gpus_per_task"
                else request.total_gpus,
                f"needs {request.gpus_per_task} GPU(s) per task but the largest node "
                f"has {max_gpus} GPU(s)",
                "gpus",
            )
        if request.nodes is not None and request.nodes > len(self.specs):
            return (
                "nodes",
                request.nodes,
                f"is more than the {len(self.specs)} node(s) of the allocation",
                "nodes",
            )
        return (
            "tasks",
            request.tasks,
            f"with {request.describe()} does not fit even on the idle allocation "
            f"({self.describe()})",
            "cores",
        )


def _split(tasks: int, nodes: int) -> list[int]:
    """Tasks per node when ``tasks`` are spread evenly over ``nodes`` nodes."""
    base, extra = divmod(tasks, nodes)
    return [base + 1] * extra + [base] * (nodes - extra)


def _fit_nodes(
    candidates: Sequence[NodeState], per_node: list[int], request: ResourceRequest
) -> Placement | None:
    """Give each entry of ``per_node`` (largest first) a distinct node that fits.

    Uses best fit (fewest free cores first) so that roomy nodes stay free.
    """
    by_room = sorted(candidates, key=lambda n: (len(n.free_cores), n.spec.rank))
    used: set[int] = set()
    chosen: list[tuple[NodeState, int]] = []
    for tasks in sorted(per_node, reverse=True):
        node = next(
            (n for n in by_room if n.spec.rank not in used and n.task_slots(request) >= tasks),
            None,
        )
        if node is None:
            return None
        used.add(node.spec.rank)
        chosen.append((node, tasks))
    chosen.sort(key=lambda item: item[0].spec.rank)
    return Placement(tuple(node.share_for(tasks, request) for node, tasks in chosen))
