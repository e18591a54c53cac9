"""Per-node model of the allocation: which cores and GPUs of which node are free.

Free resources are tracked per node (never as aggregate counts): a 4-core task
does not "fit" into two nodes with 2 free cores each. The model is updated in
place when a job starts or finishes, so no resource query is needed per
submission.

A node's own state is in :mod:`.nodes`, the search for where a request fits
in :mod:`.placement`; here: the nodes, their free-capacity index, taking and
giving back, drained and lost ranks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .capacity import CapacityIndex
from .nodes import NodeShare, NodeSpec, NodeState, Placement
from .placement import PlacementSearch


class Allocation(PlacementSearch):
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
