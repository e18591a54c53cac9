"""Admission policies on a simulated clock: order, backfill, fifo, starvation."""

import math
import random

import pytest

from snakemake_executor_plugin_matensemble.packing.nodes import NodeShare, Placement
from snakemake_executor_plugin_matensemble.packing.packer import AdmissionRound
from snakemake_executor_plugin_matensemble.packing.policies import (
    _UNKNOWN,
    POLICIES,
    BackfillPolicy,
    FifoPolicy,
    _earliest_fit,
    _needs_empty_nodes,
    _when_nodes_empty,
    make_policy,
)
from snakemake_executor_plugin_matensemble.packing.queue import JobQueue, JobTicket
from snakemake_executor_plugin_matensemble.packing.resource_request import ResourceRequest

from .packing import job, names, packer, reference_earliest_fit


def test_registry_names():
    assert set(POLICIES) == {"backfill", "fifo"}
    assert isinstance(make_policy("fifo", 5), FifoPolicy)
    backfill = make_policy("backfill", 7.5)
    assert isinstance(backfill, BackfillPolicy)
    assert backfill.reserve_after == 7.5


def test_higher_priority_starts_first():
    p, _ = packer(FifoPolicy(), cores=1)
    p.enqueue([job(name="low"), job(priority=10, name="high")])
    assert names(p.admit()) == ["high"]


def test_fifo_waits_behind_a_job_that_does_not_fit():
    p, _ = packer(FifoPolicy(), cores=4)
    p.enqueue([job(cores=3, name="a"), job(cores=2, name="big"), job(cores=1, name="small")])
    assert names(p.admit()) == ["a"]
    assert p.allocation.free_cores == 1  # small would fit, but fifo keeps order


def test_backfill_starts_small_jobs_around_a_blocked_one():
    p, _ = packer(BackfillPolicy(reserve_after=60), cores=4)
    p.enqueue([job(cores=3, name="a"), job(cores=2, name="big"), job(cores=1, name="small")])
    assert names(p.admit()) == ["a", "small"]
    assert names(p.queue) == ["big"]


def test_backfill_reserves_for_a_starved_job_with_unknown_runtimes():
    """Without runtimes, a starved job makes everything else wait for it."""
    p, clock = packer(BackfillPolicy(reserve_after=10), cores=4)
    running = [job(name=f"r{i}") for i in range(4)]
    p.enqueue(running)
    p.admit()
    p.enqueue([job(cores=4, name="big")] + [job(name=f"s{i}") for i in range(20)])
    assert p.admit() == []
    # a small job ends before the big one has starved: a small one backfills
    clock.now = 5
    p.finish(running[0])
    assert names(p.admit()) == ["s0"]
    # big has now waited past reserve_after: freed cores are kept for it
    clock.now = 15
    p.finish(running[1])
    assert p.admit() == []
    for ticket in list(p.running.values()):
        p.finish(ticket)
    assert names(p.admit()) == ["big"]


def stream_with_big_job(reserve_after: float, steps: int = 200) -> float | None:
    """1-core 10 s jobs arrive every 2.5 s on 4 cores (always 4 running,
    staggered); a 4-core job queued at t=10. When does it start?"""
    p, clock = packer(BackfillPolicy(reserve_after=reserve_after), cores=4)
    for step in range(steps):
        clock.now = step * 2.5
        for ticket in list(p.running.values()):
            if ticket.started_at + 10 <= clock.now:
                p.finish(ticket)
        p.enqueue([job(walltime=10, name=f"s{step}")])
        if step == 4:
            p.enqueue([job(cores=4, walltime=10, name="big")])
        if "big" in names(p.admit()):
            return clock.now
    return None


def test_starvation_guard_lets_the_big_job_start_under_a_stream_of_small_ones():
    started_at = stream_with_big_job(reserve_after=30)
    assert started_at is not None, "the big job was starved"
    # queued at 10, reserved at >= 40, running jobs end within 10 s after that
    assert 40 <= started_at <= 10 + 30 + 10 + 2.5


def test_backfill_without_guard_would_starve():
    assert stream_with_big_job(reserve_after=float("inf")) is None


def test_reservation_still_backfills_jobs_that_end_before_the_shadow_time():
    p, _clock = packer(BackfillPolicy(reserve_after=0), cores=4)
    long = job(cores=2, walltime=100, name="long")
    p.enqueue([long])
    p.admit()
    p.enqueue([job(cores=4, walltime=50, name="big"), job(cores=1, walltime=200, name="slow")])
    p.enqueue([job(cores=2, walltime=90, name="quick")])
    # big can start at t=100 when "long" ends; "quick" (ends at 90) may use the
    # two free cores meanwhile, "slow" (ends at 200) may not.
    assert names(p.admit()) == ["quick"]


def test_reservation_allows_jobs_on_resources_the_starved_job_does_not_need():
    p, _ = packer(BackfillPolicy(reserve_after=0), cores=4, node_count=3)
    # n0 full until t=100, n1 has one core busy until t=50, n2 one core busy
    # for an unknown time.
    for ticket, rank in (
        (job(cores=4, walltime=100, name="A"), 0),
        (job(cores=1, walltime=50, name="B"), 1),
        (job(cores=1, name="C"), 2),
    ):
        p.enqueue([ticket])
        placement = Placement((NodeShare(rank, 1, tuple(range(ticket.request.cores_per_task))),))
        p.allocation.take(placement)
        p.queue.pop(ticket)
        ticket.placement, ticket.started_at = placement, 0.0
        p.running[ticket.key] = ticket
    p.enqueue([job(cores=4, name="big"), job(cores=2, name="spare"), job(cores=2, name="s2")])
    # big is promised n1 at t=50; "spare" fits on n2 without touching n1, "s2"
    # would need n1's free cores, which are promised.
    started = p.admit()
    assert names(started) == ["spare"]
    assert started[0].placement.ranks == (2,)


def test_gpu_jobs_wait_for_gpus_not_cores():
    p, _ = packer(BackfillPolicy(), cores=8, gpus=2)
    p.enqueue([job(gpus=1, name=f"g{i}") for i in range(3)] + [job(name="cpu")])
    assert names(p.admit()) == ["g0", "g1", "cpu"]


# -- the lazy reservation promises what giving back every job did ---------------

_BLOCKED = [
    ResourceRequest(exclusive=True),
    ResourceRequest(tasks=2, exclusive=True, nodes=2),
    ResourceRequest(cores_per_task=2),
    ResourceRequest(cores_per_task=5),
    ResourceRequest(cores_per_task=3, gpus_per_task=1),
    ResourceRequest(tasks=4, cores_per_task=2, nodes=2),
    ResourceRequest(tasks=3, cores_per_task=1, nodes=3),
    ResourceRequest(tasks=6, cores_per_task=2),
    ResourceRequest(cores_per_task=8),  # a whole node's cores: waits for empty nodes
    ResourceRequest(tasks=2, cores_per_task=8, nodes=2),
    ResourceRequest(tasks=16, cores_per_task=1, gpus_per_task=0, nodes=2),
    ResourceRequest(tasks=3, exclusive=True, nodes=3),
]


def _busy_packer(rng: random.Random):
    p, clock = packer(BackfillPolicy(reserve_after=math.inf), cores=8, node_count=8, gpus=2)
    for step in range(120):
        clock.now = float(step)
        cores, gpus = rng.choice(((1, 0), (1, 0), (2, 0), (3, 1), (4, 0), (1, 1), (6, 0)))
        walltime = rng.choice((None, 10, 20, 20, 30))  # ties on purpose
        if rng.random() < 0.15:  # a 2-node job: both nodes empty with it
            request = ResourceRequest(tasks=2, cores_per_task=3, nodes=2, walltime_s=walltime)
            p.enqueue([JobTicket(10**6 + step, request)])
        else:
            p.enqueue([job(cores=cores, gpus=gpus, walltime=walltime)])
        p.admit()
        if p.running and rng.random() < 0.3:
            p.finish(rng.choice(list(p.running.values())))
        if p.queue and rng.random() < 0.2:
            p.withdraw_queued()
    return p, clock


@pytest.mark.parametrize("seed", range(30))
def test_lazy_reservation_matches_giving_back_every_job(seed):
    rng = random.Random(seed)
    p, clock = _busy_packer(rng)
    for by_end, empties in ((p.running_by_end, p), (p.running_by_end, None), (None, None)):
        round_ = AdmissionRound(
            p.queue, p.allocation, p.running.values(), clock.now, by_end=by_end, empties=empties
        )
        for request in _BLOCKED:
            assert _earliest_fit(request, round_) == reference_earliest_fit(request, round_)


@pytest.mark.parametrize("seed", range(30))
def test_reservation_counts_the_jobs_started_in_the_same_round(seed):
    rng = random.Random(seed)
    p, clock = _busy_packer(rng)
    queue = JobQueue()  # the jobs started in this round
    round_ = AdmissionRound(
        queue, p.allocation, p.running.values(), clock.now, by_end=p.running_by_end, empties=p
    )
    for shape in ((1, 0), (2, 0), (1, 1)):
        ticket = job(cores=shape[0], gpus=shape[1], walltime=rng.choice((None, 5, 20)))
        queue.push(ticket)
        placement = p.allocation.place(ticket.request)
        if placement is not None:
            round_.start(ticket, placement)
    for request in _BLOCKED:
        assert _earliest_fit(request, round_) == reference_earliest_fit(request, round_)


def test_the_empty_node_index_answers_whole_node_reservations():
    """The seeded cases above go through the index (not only the walk)."""
    answered = 0
    for seed in range(30):
        p, clock = _busy_packer(random.Random(seed))
        round_ = AdmissionRound(
            p.queue, p.allocation, p.running.values(), clock.now, by_end=p.running_by_end, empties=p
        )
        for request in _BLOCKED:
            if p.allocation.place(request) is None and _needs_empty_nodes(request, p.allocation):
                found = _when_nodes_empty(request, round_, p.allocation.copy())
                answered += found is not _UNKNOWN and found is not None
    assert answered > 50


@pytest.mark.parametrize("seed", range(10))
def test_running_by_end_is_running_sorted_by_end(seed):
    rng = random.Random(seed)
    p, _ = _busy_packer(rng)
    expected = sorted(
        (t for t in p.running.values() if t.expected_end is not None), key=lambda t: t.expected_end
    )
    assert list(p.running_by_end()) == expected
    # changed behind the packer's back (as tests do): rebuilt, same order
    extra = job(walltime=1)
    extra.started_at = 0.0
    p.running[extra.key] = extra
    assert next(iter(p.running_by_end())) is extra
