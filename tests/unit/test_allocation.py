"""Per-node placement: fragmentation, multi-node, exclusive, GPUs."""

import copy
import random

import pytest

from snakemake_executor_plugin_matensemble.packing.allocation import Allocation
from snakemake_executor_plugin_matensemble.packing.nodes import NodeShare, NodeSpec, Placement
from snakemake_executor_plugin_matensemble.packing.resource_request import ResourceRequest

from .packing import ReferenceAllocation


def nodes(count: int, cores: int, gpus: int = 0) -> list[NodeSpec]:
    return [
        NodeSpec(rank, f"n{rank}", tuple(range(cores)), tuple(str(g) for g in range(gpus)))
        for rank in range(count)
    ]


def test_four_core_task_does_not_fit_in_two_half_free_nodes():
    allocation = Allocation(nodes(2, 4))
    allocation.take(allocation.place(ResourceRequest(cores_per_task=2)))
    second = allocation.place(ResourceRequest(cores_per_task=2))
    # best fit puts the second 2-core job on the same node, keeping n1 whole
    assert second.ranks == (0,)
    allocation.take(second)
    allocation.take(allocation.place(ResourceRequest(cores_per_task=2)))
    assert allocation.free_cores == 2
    assert allocation.place(ResourceRequest(cores_per_task=4)) is None
    assert allocation.place(ResourceRequest(cores_per_task=2)) is not None


def test_aggregate_free_cores_are_not_enough():
    allocation = Allocation(nodes(2, 4))
    for rank in (0, 1):
        allocation.take(Placement((NodeShare(rank, 1, (0, 1)),)))
    assert allocation.free_cores == 4
    assert allocation.place(ResourceRequest(cores_per_task=4)) is None
    assert allocation.place(ResourceRequest(tasks=2, cores_per_task=2)).ranks == (0, 1)


def test_best_fit_keeps_whole_nodes_free():
    allocation = Allocation(nodes(3, 4))
    allocation.take(allocation.place(ResourceRequest(cores_per_task=3)))  # n0: 1 free
    placement = allocation.place(ResourceRequest(cores_per_task=1))
    assert placement.ranks == (0,)


def test_tasks_spread_over_nodes_when_no_single_node_fits():
    allocation = Allocation(nodes(3, 2))
    placement = allocation.place(ResourceRequest(tasks=5, cores_per_task=1))
    assert placement.ncores == 5
    assert sum(share.tasks for share in placement.shares) == 5
    assert len(placement.shares) == 3


def test_explicit_nodes_spread_tasks_evenly():
    allocation = Allocation(nodes(3, 4))
    placement = allocation.place(ResourceRequest(tasks=4, cores_per_task=1, nodes=2))
    assert sorted(share.tasks for share in placement.shares) == [2, 2]
    assert len(set(placement.ranks)) == 2


def test_explicit_nodes_need_distinct_nodes_with_room():
    allocation = Allocation(nodes(2, 4))
    allocation.take(allocation.place(ResourceRequest(cores_per_task=3, nodes=1)))
    assert allocation.place(ResourceRequest(tasks=4, cores_per_task=1, nodes=2)) is None
    assert allocation.place(ResourceRequest(tasks=2, cores_per_task=1, nodes=2)) is not None


def test_exclusive_needs_idle_nodes_and_gets_all_of_them():
    allocation = Allocation(nodes(2, 4, gpus=2))
    allocation.take(allocation.place(ResourceRequest(cores_per_task=1)))
    placement = allocation.place(ResourceRequest(exclusive=True))
    assert placement.ranks == (1,)
    assert placement.ncores == 4
    assert placement.ngpus == 2
    allocation.take(placement)
    assert allocation.place(ResourceRequest(exclusive=True)) is None


def test_gpus_are_distinct_ids_and_come_back():
    allocation = Allocation(nodes(1, 8, gpus=2))
    first = allocation.place(ResourceRequest(gpus_per_task=1))
    allocation.take(first)
    second = allocation.place(ResourceRequest(gpus_per_task=1))
    allocation.take(second)
    assert {first.shares[0].gpus, second.shares[0].gpus} == {("0",), ("1",)}
    assert allocation.place(ResourceRequest(gpus_per_task=1)) is None
    allocation.give_back(first)
    again = allocation.place(ResourceRequest(gpus_per_task=1))
    assert again.shares[0].gpus == first.shares[0].gpus


def test_taking_resources_twice_is_refused():
    allocation = Allocation(nodes(1, 2))
    placement = allocation.place(ResourceRequest(cores_per_task=2))
    allocation.take(placement)
    with pytest.raises(ValueError, match="not free"):
        allocation.take(placement)


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (ResourceRequest(cores_per_task=5), "threads"),
        (ResourceRequest(cores_per_task=5, cores_field="cpus_per_task"), "cpus_per_task"),
        (ResourceRequest(gpus_per_task=3), "gpu"),
        (ResourceRequest(tasks=3, nodes=3), "nodes"),
        (ResourceRequest(tasks=9), "tasks"),
    ],
)
def test_why_never_fits_blames_the_right_field(request_, field):
    allocation = Allocation(nodes(2, 4, gpus=2))
    problem = allocation.why_never_fits(request_)
    assert problem is not None
    assert problem[0] == field


def test_why_never_fits_is_none_for_requests_that_fit_when_idle():
    allocation = Allocation(nodes(2, 4, gpus=2))
    allocation.take(allocation.place(ResourceRequest(cores_per_task=4, exclusive=True)))
    assert allocation.why_never_fits(ResourceRequest(tasks=8)) is None


def test_a_gpu_job_without_gpus_is_told_the_backends_hint():
    from snakemake_executor_plugin_matensemble.backends.local import LocalBackend

    request = ResourceRequest(gpus_per_task=1, gpus_field="gpu")
    neutral = Allocation(nodes(1, 4)).why_never_fits(request)
    assert neutral == ("gpu", 1, "needs 1 GPU(s) per task but the largest node has 0 GPU(s)")
    local = Allocation(nodes(1, 4), hints=LocalBackend.resource_hints)
    field, value, problem = local.why_never_fits(request)
    assert (field, value) == ("gpu", 1)
    assert problem.startswith("needs 1 GPU(s) per task but the largest node has 0 GPU(s): ")
    assert "--matensemble-local-gpus" in problem
    # the hint names what is short: cores for a too-wide job, never the GPU flag
    _, _, cores = local.why_never_fits(ResourceRequest(cores_per_task=8))
    assert "--matensemble-local-cores" in cores
    assert "gpus" not in cores
    # hints survive copies (the never-fits check places on an empty copy)
    assert local.empty_copy().hints == local.hints
    assert local.copy().hints == local.hints


# -- the indexed allocation decides exactly as the scan of every node did --------

_SHAPES = [
    ResourceRequest(),
    ResourceRequest(cores_per_task=3),
    ResourceRequest(cores_per_task=7, gpus_per_task=1),
    ResourceRequest(tasks=3, cores_per_task=2),
    ResourceRequest(tasks=9, cores_per_task=1),
    ResourceRequest(tasks=4, gpus_per_task=1),
    ResourceRequest(tasks=4, cores_per_task=2, nodes=2),
    ResourceRequest(tasks=3, cores_per_task=1, nodes=3),
    ResourceRequest(tasks=5, cores_per_task=1, gpus_per_task=1, nodes=2),
    ResourceRequest(exclusive=True),
    ResourceRequest(tasks=2, exclusive=True, nodes=2),
    ResourceRequest(tasks=1, exclusive=True, nodes=2),
    ResourceRequest(tasks=30, cores_per_task=1),
]


def _random_specs(rng: random.Random) -> list[NodeSpec]:
    count = rng.randint(1, 12)
    return [
        NodeSpec(
            rank * 3 + rng.randint(0, 2),  # ranks need not be dense
            f"n{rank}",
            tuple(range(rng.choice((4, 4, 8, 6)))),
            tuple(str(g) for g in range(rng.choice((0, 2, 2, 4)))),
        )
        for rank in range(count)
    ]


def _assert_same(indexed: Allocation, reference: ReferenceAllocation) -> None:
    for request in _SHAPES:
        assert indexed.place(request) == reference.place(request), request
    assert indexed.free_cores == sum(len(n.free_cores) for n in reference.usable_nodes)


@pytest.mark.parametrize("seed", range(40))
def test_indexed_placement_matches_the_reference_on_seeded_workloads(seed):
    rng = random.Random(seed)
    specs = _random_specs(rng)
    indexed, reference = Allocation(specs), ReferenceAllocation(specs)
    twin = None  # a copy taken midway must stay independent of the original
    running: list[Placement] = []
    for step in range(150):
        _assert_same(indexed, reference)
        roll = rng.random()
        if roll < 0.55:
            placement = indexed.place(rng.choice(_SHAPES))
            if placement is not None:
                indexed.take(placement)
                reference.take(placement)
                running.append(placement)
        elif roll < 0.85 and running:
            placement = running.pop(rng.randrange(len(running)))
            indexed.give_back(placement)
            reference.give_back(placement)
        elif roll < 0.9 and running:
            placement = running.pop(rng.randrange(len(running)))
            indexed.give_back(placement)
            reference.give_back(placement)
            indexed.withhold(placement)
            reference.withhold(placement)
        else:
            rank = rng.choice(specs).rank
            change = rng.choice(("drain", "undrain", "mark_down", "mark_up"))
            getattr(indexed, change)([rank])
            node = reference._by_rank[rank]
            if change == "drain":
                node.drained = "drained"
            elif change == "undrain":
                node.drained = None
            else:
                node.down = change == "mark_down"
        if step == 75:
            twin, frozen = indexed.copy(), copy.deepcopy(reference)
    for placement in running:
        indexed.give_back(placement)
        reference.give_back(placement)
    _assert_same(indexed, reference)
    _assert_same(twin, frozen)


def test_a_copy_does_not_see_the_originals_changes_nor_the_original_the_copys():
    allocation = Allocation(nodes(2, 4))
    first = allocation.place(ResourceRequest(cores_per_task=4))
    allocation.take(first)
    twin = allocation.copy()
    allocation.give_back(first)
    twin.take(twin.place(ResourceRequest(cores_per_task=4)))
    assert allocation.free_cores == 8
    assert twin.free_cores == 0
    assert allocation.place(ResourceRequest(exclusive=True, tasks=2, nodes=2)) is not None
    assert twin.place(ResourceRequest()) is None
