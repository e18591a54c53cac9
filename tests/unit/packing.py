"""Helpers for packer and policy tests: a settable clock, nodes, tickets, and
the reference (scan-every-node) placement the indexed allocation must match."""

from snakemake_executor_plugin_matensemble.packing.allocation import Allocation
from snakemake_executor_plugin_matensemble.packing.nodes import NodeSpec, NodeState, Placement
from snakemake_executor_plugin_matensemble.packing.packer import Packer
from snakemake_executor_plugin_matensemble.packing.queue import JobTicket
from snakemake_executor_plugin_matensemble.packing.resource_request import ResourceRequest


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def packer(policy, cores=4, node_count=1, gpus=0, **kwargs) -> tuple[Packer, Clock]:
    clock = Clock()
    specs = [
        NodeSpec(r, f"n{r}", tuple(range(cores)), tuple(str(g) for g in range(gpus)))
        for r in range(node_count)
    ]
    return Packer(Allocation(specs), policy, clock, **kwargs), clock


_keys = iter(range(1, 10**9))


def job(cores=1, priority=0, walltime=None, name="", gpus=0, rule="") -> JobTicket:
    request = ResourceRequest(cores_per_task=cores, gpus_per_task=gpus, walltime_s=walltime)
    return JobTicket(key=next(_keys), request=request, priority=priority, payload=name, rule=rule)


def names(tickets) -> list[str]:
    return [t.payload for t in tickets]


class ReferenceAllocation:
    """The packer's placement before free capacity was indexed: every query
    scans every node. Kept only to check that the indexed
    :class:`Allocation` makes the same decisions (same nodes, cores, GPUs)."""

    def __init__(self, specs) -> None:
        self.nodes = [NodeState.idle(spec) for spec in specs]
        self._by_rank = {state.spec.rank: state for state in self.nodes}

    @property
    def usable_nodes(self) -> list[NodeState]:
        return [node for node in self.nodes if node.usable]

    def place(self, request: ResourceRequest) -> Placement | None:
        if request.exclusive:
            count = request.nodes or 1
            idle = [n for n in self.usable_nodes if n.is_idle]
            return _reference_fit(idle, _split(request.tasks, count), request)
        if request.nodes is not None:
            return _reference_fit(self.usable_nodes, _split(request.tasks, request.nodes), request)
        slots = [(node.task_slots(request), node) for node in self.usable_nodes]
        whole = [
            (len(node.free_cores), node.spec.rank, node) for n, node in slots if n >= request.tasks
        ]
        if whole:
            node = min(whole)[2]
            return Placement((node.share_for(request.tasks, request),))
        if sum(n for n, _ in slots) < request.tasks:
            return None
        shares = []
        remaining = request.tasks
        for n, node in sorted(slots, key=lambda item: (-item[0], item[1].spec.rank)):
            if remaining == 0 or n == 0:
                break
            tasks = min(n, remaining)
            shares.append(node.share_for(tasks, request))
            remaining -= tasks
        return Placement(tuple(sorted(shares, key=lambda s: s.rank)))

    def take(self, placement: Placement) -> None:
        for share in placement.shares:
            self._by_rank[share.rank].take(share)

    def give_back(self, placement: Placement) -> None:
        for share in placement.shares:
            self._by_rank[share.rank].give_back(share)

    def withhold(self, placement: Placement) -> None:
        for share in placement.shares:
            node = self._by_rank[share.rank]
            cores, gpus = set(share.cores), set(share.gpus)
            node.free_cores = [c for c in node.free_cores if c not in cores]
            node.free_gpus = [g for g in node.free_gpus if g not in gpus]


def _split(tasks: int, nodes: int) -> list[int]:
    base, extra = divmod(tasks, nodes)
    return [base + 1] * extra + [base] * (nodes - extra)


def _reference_fit(candidates, per_node, request) -> Placement | None:
    by_room = sorted(candidates, key=lambda n: (len(n.free_cores), n.spec.rank))
    used: set[int] = set()
    chosen = []
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


def reference_earliest_fit(request: ResourceRequest, round_) -> tuple | None:
    """The reservation's promise as computed before it was made lazy: give
    every ending job back in turn (soonest first, ties in ``running`` order,
    then started ones) and try to place after each."""
    future = round_.allocation.copy()
    running = [*round_.running, *round_.started]
    ending = sorted(
        (t for t in running if t.expected_end is not None and t.placement),
        key=lambda t: t.expected_end,
    )
    for done in ending:
        future.give_back(done.placement)
        promised = future.place(request)
        if promised is not None:
            return done.expected_end, promised
    return None


def unusable(allocation) -> dict[int, str]:
    """rank -> why no job may start there (drained: the reason; down), read
    from the allocation's node states."""
    return {
        node.spec.rank: ("down" if node.down else f"drained ({node.drained})")
        for node in allocation.nodes
        if not node.usable
    }
