"""Per-node model of the allocation: which cores and GPUs of which node are free.

Free resources are tracked per node (never as aggregate counts): a 4-core task
does not "fit" into two nodes with 2 free cores each. The model is updated in
place when a job starts or finishes, so no resource query is needed per
submission.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ..cpulist import format_cpu_list
from ..intake.request import ResourceRequest
from .capacity import CapacityIndex


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

    Free capacity is indexed (:class:`~.capacity.CapacityIndex`): usable nodes
    by ``(free cores, free GPUs)``, and usable idle nodes apart, so placement
    costs the same on 16 nodes as on 9,408. Copies share node states until
    one side changes a node (copy on write), so a copy costs O(distinct free
    counts), not O(nodes). Change nodes only through the allocation's methods
    (``take``, ``give_back``, ``withhold``, ``claim``, ``drain``...): a
    :class:`NodeState` changed behind its back is not re-indexed.

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
        self._position = {state.spec.rank: i for i, state in enumerate(self.nodes)}
        #: ranks whose node state this allocation alone holds (copy on write)
        self._owned = set(self._by_rank)
        self._never_fits: dict[tuple, tuple[str, object, str] | None] = {}
        self._usable = CapacityIndex()
        self._idle = CapacityIndex()
        self._free_cores = self._free_gpus = 0
        for node in self.nodes:
            self._index(node)
        sizes = {(len(spec.cores), len(spec.gpus)) for spec in self.specs}
        self._node_size = sizes.pop() if len(sizes) == 1 else None

    # -- the index ----------------------------------------------------------------
    def _index(self, node: NodeState) -> None:
        if not node.usable:
            return
        cores, gpus = len(node.free_cores), len(node.free_gpus)
        self._usable.add(node.spec.rank, cores, gpus)
        if node.is_idle:
            self._idle.add(node.spec.rank, cores, gpus)
        self._free_cores += cores
        self._free_gpus += gpus

    def _unindex(self, node: NodeState) -> None:
        if not node.usable:
            return
        cores, gpus = len(node.free_cores), len(node.free_gpus)
        self._usable.remove(node.spec.rank, cores, gpus)
        if node.is_idle:
            self._idle.remove(node.spec.rank, cores, gpus)
        self._free_cores -= cores
        self._free_gpus -= gpus

    def _own(self, rank: int) -> NodeState:
        """This allocation's own node state of ``rank``, unindexed: the caller
        changes it and calls :meth:`_index` (copy on write)."""
        node = self._by_rank[rank]
        if rank not in self._owned:
            node = NodeState(
                node.spec, list(node.free_cores), list(node.free_gpus), node.drained, node.down
            )
            self._by_rank[rank] = node
            self.nodes[self._position[rank]] = node
            self._owned.add(rank)
        self._unindex(node)
        return node

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
        return self._free_cores

    @property
    def free_gpus(self) -> int:
        return self._free_gpus

    @property
    def usable_nodes(self) -> list[NodeState]:
        return [node for node in self.nodes if node.usable]

    # -- drained and lost nodes -------------------------------------------------
    def _set_flags(self, rank: int, drained: str | None, down: bool) -> None:
        node = self._own(rank)
        node.drained, node.down = drained, down
        self._index(node)

    def drain(self, ranks: Iterable[int], reason: str = "") -> list[int]:
        """No new jobs on ``ranks`` (running ones go on); returns the ranks of
        this allocation that were usable before."""
        changed = []
        for rank in ranks:
            node = self._by_rank.get(rank)
            if node is not None:
                if node.usable:
                    changed.append(rank)
                self._set_flags(rank, reason or "drained", node.down)
        return changed

    def undrain(self, ranks: Iterable[int]) -> list[int]:
        """``ranks`` take new jobs again (unless down); returns those that do now."""
        changed = []
        for rank in ranks:
            node = self._by_rank.get(rank)
            if node is not None and node.drained is not None:
                self._set_flags(rank, None, node.down)
                if not node.down:
                    changed.append(rank)
        return changed

    def mark_down(self, ranks: Iterable[int]) -> list[int]:
        """``ranks`` are gone (with what ran there); returns those newly down."""
        changed = []
        for rank in ranks:
            node = self._by_rank.get(rank)
            if node is not None and not node.down:
                self._set_flags(rank, node.drained, True)
                changed.append(rank)
        return changed

    def mark_up(self, ranks: Iterable[int]) -> list[int]:
        """``ranks`` are back; returns those that were down."""
        changed = []
        for rank in ranks:
            node = self._by_rank.get(rank)
            if node is not None and node.down:
                self._set_flags(rank, node.drained, False)
                changed.append(rank)
        return changed

    def is_usable(self, rank: int) -> bool:
        node = self._by_rank.get(rank)
        return node is not None and node.usable

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
        """An independent copy (node states are shared until either side changes one)."""
        twin = Allocation.__new__(Allocation)
        twin.specs, twin.hints = self.specs, self.hints
        twin.nodes = list(self.nodes)
        twin._by_rank = dict(self._by_rank)
        twin._position = self._position
        twin._owned = set()
        self._owned = set()
        twin._never_fits = self._never_fits
        twin._usable, twin._idle = self._usable.copy(), self._idle.copy()
        twin._free_cores, twin._free_gpus = self._free_cores, self._free_gpus
        twin._node_size = self._node_size
        return twin

    def empty_copy(self) -> Allocation:
        return Allocation(self.specs, self.hints)

    # -- placement --------------------------------------------------------------
    def place(self, request: ResourceRequest) -> Placement | None:
        """Where ``request`` would run now, or None if it does not fit now."""
        if request.exclusive:
            return self._fit_nodes(self._idle, _split(request.tasks, request.nodes or 1), request)
        if request.nodes is not None:
            return self._fit_nodes(self._usable, _split(request.tasks, request.nodes), request)
        return self._place_anywhere(request)

    def _place_anywhere(self, request: ResourceRequest) -> Placement | None:
        # Best fit: the node that fits all tasks with the fewest cores left over,
        # which keeps whole nodes free for big jobs.
        tasks = request.tasks
        best = self._usable.best(tasks * request.cores_per_task, tasks * request.gpus_per_task)
        if best:
            return Placement((self._by_rank[best[0]].share_for(tasks, request),))
        return self._spread(request)

    def _spread(self, request: ResourceRequest) -> Placement | None:
        """Tasks over as few nodes as possible: the roomiest first (then lowest rank)."""
        by_slots: dict[int, list] = {}
        total = 0
        for cores, gpus, bucket in self._usable.levels():
            slots = cores // request.cores_per_task
            if request.gpus_per_task:
                slots = min(slots, gpus // request.gpus_per_task)
            if slots:
                by_slots.setdefault(slots, []).append(bucket)
                total += slots * len(bucket)
        if total < request.tasks:
            return None
        shares = []
        remaining = request.tasks
        for slots in sorted(by_slots, reverse=True):
            wanted = -(-remaining // slots)
            ranks = sorted(r for bucket in by_slots[slots] for r in bucket.smallest(wanted))
            for rank in ranks[:wanted]:
                tasks = min(slots, remaining)
                shares.append(self._by_rank[rank].share_for(tasks, request))
                remaining -= tasks
            if remaining == 0:
                break
        return Placement(tuple(sorted(shares, key=lambda s: s.rank)))

    def _fit_nodes(
        self, index: CapacityIndex, per_node: list[int], request: ResourceRequest
    ) -> Placement | None:
        """Give each entry of ``per_node`` a distinct node of ``index`` that fits.

        Uses best fit (fewest free cores first, then lowest rank) so that roomy
        nodes stay free; the largest entries choose first.
        """
        chosen: list[tuple[int, int]] = []
        used: set[int] = set()
        for tasks in sorted(set(per_node), reverse=True):
            count = per_node.count(tasks)
            ranks = index.best(
                tasks * request.cores_per_task, tasks * request.gpus_per_task, count, used
            )
            if len(ranks) < count:
                return None
            used.update(ranks)
            chosen.extend((rank, tasks) for rank in ranks)
        chosen.sort()
        return Placement(
            tuple(self._by_rank[rank].share_for(tasks, request) for rank, tasks in chosen)
        )

    # -- bookkeeping ------------------------------------------------------------
    def take(self, placement: Placement) -> None:
        for share in placement.shares:
            node = self._own(share.rank)
            try:
                node.take(share)
            finally:
                self._index(node)

    def give_back(self, placement: Placement) -> None:
        for share in placement.shares:
            node = self._own(share.rank)
            node.give_back(share)
            self._index(node)

    def claim(self, ranks: list[int], cores_per_rank: int, gpus_per_rank: int) -> Placement:
        """Take what a job that already runs holds (re-attach): the lowest free
        cores/GPUs of each rank, as many as are free."""
        shares = []
        for rank in ranks:
            if rank not in self._by_rank:
                continue
            node = self._own(rank)
            share = NodeShare(
                rank,
                1,
                tuple(node.free_cores[:cores_per_rank]),
                tuple(node.free_gpus[:gpus_per_rank]),
            )
            node.take(share)
            self._index(node)
            shares.append(share)
        return Placement(tuple(shares))

    def withhold(self, placement: Placement) -> None:
        """Mark whatever of ``placement`` is free now as not free (reservations)."""
        for share in placement.shares:
            node = self._own(share.rank)
            cores, gpus = set(share.cores), set(share.gpus)
            node.free_cores = [c for c in node.free_cores if c not in cores]
            node.free_gpus = [g for g in node.free_gpus if g not in gpus]
            self._index(node)

    def room(self, rank: int) -> tuple[int, int, int, int] | None:
        """``(free cores, free GPUs, cores, GPUs)`` of node ``rank``, or None
        if no job may start there (drained, down, not in the allocation)."""
        node = self._by_rank.get(rank)
        if node is None or not node.usable:
            return None
        spec = node.spec
        return len(node.free_cores), len(node.free_gpus), len(spec.cores), len(spec.gpus)

    @property
    def node_size(self) -> tuple[int, int] | None:
        """``(cores, GPUs)`` of every node when all nodes are alike, else None."""
        return self._node_size

    @property
    def idle_count(self) -> int:
        """Usable nodes with nothing taken."""
        return len(self._idle)

    @staticmethod
    def share_need(request: ResourceRequest) -> tuple[int, int, bool]:
        """``(cores, GPUs, whole)``: what one node must have free for the
        smallest share of ``request`` any of its nodes gets (``whole``: and be
        idle). A placement that failed can succeed after resources come back
        only if some node they came to has that now."""
        tasks = min(_split(request.tasks, request.nodes or 1))
        return tasks * request.cores_per_task, tasks * request.gpus_per_task, request.exclusive

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
