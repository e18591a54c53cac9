"""The packer: queue, admission rounds, look-ahead, re-attach, the allocation's
end, drained ranks (on a simulated clock)."""

import math

from snakemake_executor_plugin_matensemble.backends.base import RunningJob
from snakemake_executor_plugin_matensemble.packing.allocation import Allocation
from snakemake_executor_plugin_matensemble.packing.deadline import DeadlineGuard, RuntimeEstimator
from snakemake_executor_plugin_matensemble.packing.nodes import NodeSpec
from snakemake_executor_plugin_matensemble.packing.packer import Packer
from snakemake_executor_plugin_matensemble.packing.policies import BackfillPolicy, FifoPolicy
from snakemake_executor_plugin_matensemble.packing.queue import JobQueue

from .packing import Clock, job, names, packer, unusable


def test_queue_orders_by_priority_then_arrival():
    queue = JobQueue()
    for ticket in [job(name="a"), job(priority=5, name="b"), job(name="c", cores=2)]:
        queue.push(ticket)
    assert names(queue) == ["b", "a", "c"]
    assert queue.best().payload == "b"
    assert queue.best({(1, 1, 0, None, False)}).payload == "c"


def test_submit_until_out_of_resources():
    p, _ = packer(BackfillPolicy(), cores=4)
    p.enqueue([job(name=str(i)) for i in range(10)])
    started = p.admit()
    assert len(started) == 4
    assert p.allocation.free_cores == 0
    assert len(p.queue) == 6
    p.finish(started[0])
    assert len(p.admit()) == 1


def test_round_cost_does_not_grow_with_queued_jobs_of_one_shape():
    """A blocked shape is skipped as a whole: 10k identical jobs are one check."""
    calls = 0

    class CountingAllocation(Allocation):
        def place(self, request):
            nonlocal calls
            calls += 1
            return super().place(request)

    clock = Clock()
    allocation = CountingAllocation([NodeSpec(0, "n0", (0, 1, 2, 3))])
    p = Packer(allocation, BackfillPolicy(), clock)
    p.enqueue([job(cores=1, name="x")])
    p.admit()
    p.enqueue([job(cores=4) for _ in range(10_000)] + [job(cores=1) for _ in range(2)])
    calls = 0
    started = p.admit()
    assert len(started) == 2
    assert calls <= 4


def test_lookahead_chains_in_priority_order_onto_same_shape_jobs():
    p, clock = packer(BackfillPolicy(), cores=2)
    p.enqueue([job(name="a"), job(name="b"), job(name="c"), job(name="d"), job(cores=2, name="e")])
    started = p.admit()
    assert names(started) == ["a", "b"]
    chained = p.chain()
    assert names(chained) == ["c", "d"]
    assert {t.after.payload for t in chained} == {"a", "b"}
    assert names(p.queue) == ["e"]
    # when "a" ends, its successor owns its cores: nothing is given back
    a = started[0]
    successor = a.successor
    clock.now = 5
    p.finish(a)
    assert p.allocation.free_cores == 0
    assert successor.after is None
    assert successor.started_at == 5
    # the 2-core job has no same-shape predecessor: it is not chained
    assert p.chain() == []


def test_lookahead_never_lets_a_job_overtake_the_head():
    p, _ = packer(BackfillPolicy(), cores=2)
    p.enqueue([job(name="a"), job(name="b")])
    p.admit()
    p.enqueue([job(cores=2, priority=5, name="big"), job(name="small")])
    assert p.chain() == []  # "big" is next and nothing of its shape runs


def test_a_chained_job_that_fails_to_launch_leaves_the_resources_to_its_predecessor():
    p, _ = packer(BackfillPolicy(), cores=1)
    p.enqueue([job(name="a"), job(name="b")])
    (a,) = p.admit()
    (b,) = p.chain()
    p.finish(b)  # e.g. Flux refused it
    assert a.successor is None
    assert p.allocation.free_cores == 0
    p.finish(a)
    assert p.allocation.free_cores == 1


# -- re-attach: one clock ---------------------------------------------------------
WALL = 1_795_420_000.0  # epoch seconds, as Flux reports a job's start


def test_a_reattached_job_is_counted_in_the_packers_clock():
    """A job re-attached after a restart started (epoch) 30 s ago: in the
    packer's monotonic clock it started 30 s before now, not at an epoch time."""
    clock = Clock()
    clock.now = 500.0
    p = Packer(
        Allocation([NodeSpec(0, "n0", (0, 1, 2, 3))]), BackfillPolicy(0), clock, wall=lambda: WALL
    )
    ticket = job(cores=2, walltime=100)
    ticket.attach = RunningJob("f1", (0,), 2, 0, started_at=WALL - 30)
    placement = p.attach(ticket)
    assert placement.ncores == 2
    assert ticket.started_at == 470.0
    assert ticket.expected_end == 570.0
    # the starvation guard sees it: a 4-core job waits for it (until 570), and a
    # 2-core job that would run past 570 may not take the free cores meanwhile
    p.enqueue([job(cores=4, walltime=10, name="big"), job(cores=2, walltime=200, name="slow")])
    assert p.admit() == []
    p.enqueue([job(cores=1, walltime=60, name="quick")])  # ends at 560: before big
    assert names(p.admit()) == ["quick"]


# -- the allocation's end ---------------------------------------------------------
def guard(clock, end_in, **kwargs):
    deadline = DeadlineGuard(clock=clock, wall=lambda: WALL + clock.now, **kwargs)
    deadline.set_end(WALL + end_in)
    return deadline


def test_jobs_that_cannot_finish_before_the_end_are_not_started():
    clock = Clock()
    p, _ = packer(BackfillPolicy(), cores=4)
    p.clock = clock
    p.deadline = guard(clock, end_in=100, margin=10)
    p.enqueue([job(walltime=60, name="fits"), job(walltime=95, name="too-long")])
    assert names(p.expire()) == ["too-long"]
    assert names(p.admit()) == ["fits"]
    # 40 s later a 60-s job no longer fits (40 + 60 + 10 > 100)
    clock.now = 40.5
    p.enqueue([job(walltime=60, name="late"), job(walltime=30, name="short")])
    assert names(p.expire()) == ["late"]
    assert names(p.admit()) == ["short"]


def test_expire_scans_the_queue_only_when_a_job_is_due():
    clock = Clock()
    p, _ = packer(FifoPolicy(), cores=1)
    p.clock = clock
    p.deadline = guard(clock, end_in=1000, margin=0)
    p.enqueue([job(walltime=100, name=str(i)) for i in range(50)])
    assert p.next_expiry == 900
    clock.now = 899
    assert p.expire() == []
    clock.now = 901
    assert len(p.expire()) == 50
    assert p.next_expiry == math.inf


def test_unknown_runtimes_start_until_the_margin_or_are_held():
    clock = Clock()
    p, _ = packer(BackfillPolicy(), cores=4)
    p.clock = clock
    p.deadline = guard(clock, end_in=100, margin=10)
    p.enqueue([job(name="unknown")])
    assert p.expire() == []
    clock.now = 91
    p.enqueue([job(name="late-unknown")])
    assert names(p.expire()) == ["unknown", "late-unknown"]
    held, _ = packer(BackfillPolicy(), cores=4)
    held.clock = clock
    held.deadline = guard(clock, end_in=1000, margin=10, unknown="hold")
    held.enqueue([job(name="unknown"), job(walltime=5, name="known")])
    assert names(held.expire()) == ["unknown"]


def test_runtimes_of_earlier_runs_estimate_jobs_without_one():
    clock = Clock()
    p, _ = packer(BackfillPolicy(), cores=4)
    p.clock = clock
    estimator = RuntimeEstimator("journal", {"md": 80.0})
    p.deadline = guard(clock, end_in=100, margin=10, estimator=estimator)
    p.enqueue([job(rule="md", name="md"), job(rule="prep", name="prep")])
    clock.now = 15  # md needs 80 s + 10 s margin: too late now
    assert names(p.expire()) == ["md"]
    assert names(p.admit()) == ["prep"]


def test_no_end_means_nothing_expires():
    p, clock = packer(BackfillPolicy(), cores=1)
    p.enqueue([job(walltime=10**6)])
    clock.now = 10**7
    assert p.expire() == []


def test_lookahead_only_chains_jobs_that_finish_before_the_end():
    clock = Clock()
    p, _ = packer(BackfillPolicy(), cores=1)
    p.clock = clock
    p.deadline = guard(clock, end_in=100, margin=0)
    p.enqueue([job(walltime=45, name=n) for n in "abc"])
    assert names(p.admit()) == ["a"]
    assert names(p.chain()) == ["b"]  # b: 45-90 fits; c would start at 90 and end at 135
    assert names(p.queue) == ["c"]


def test_lookahead_with_an_unknown_predecessor_end_chains_only_unknown_runtimes():
    clock = Clock()
    p, _ = packer(BackfillPolicy(), cores=1)
    p.clock = clock
    p.deadline = guard(clock, end_in=1000, margin=0)
    p.enqueue([job(name="a"), job(name="b"), job(walltime=10, name="known")])
    p.admit()
    (b,) = p.chain()  # same chance as starting now
    assert names([b]) == ["b"]
    p2, _ = packer(BackfillPolicy(), cores=1)
    p2.clock = clock
    p2.deadline = guard(clock, end_in=1000, margin=0)
    p2.enqueue([job(name="a"), job(walltime=10, name="known")])
    p2.admit()
    assert p2.chain() == []  # it might start too late to finish


def test_a_chained_job_whose_latest_start_passed_is_taken_back():
    clock = Clock()
    p, _ = packer(BackfillPolicy(), cores=1)
    p.clock = clock
    p.deadline = guard(clock, end_in=100, margin=10)
    p.enqueue([job(name="a"), job(name="b")])
    p.admit()
    (b,) = p.chain()
    assert p.late_chained() == []
    clock.now = 91  # past b's latest start (100 - 10), a still runs
    assert p.late_chained() == [b]
    p.requeue(b)
    assert names(p.expire()) == ["b"]


# -- drained ranks and requeued jobs ------------------------------------------------
def test_no_job_is_placed_on_a_drained_rank_until_it_is_undrained():
    p, _ = packer(BackfillPolicy(), cores=2, node_count=2)
    assert p.allocation.drain([1], "admin") == [1]
    p.enqueue([job(name=str(i)) for i in range(4)])
    started = p.admit()
    assert [t.placement.ranks for t in started] == [(0,), (0,)]
    assert p.allocation.free_cores == 0
    assert unusable(p.allocation) == {1: "drained (admin)"}
    assert p.allocation.undrain([1]) == [1]
    assert [t.placement.ranks for t in p.admit()] == [(1,), (1,)]


def test_down_ranks_take_no_jobs_and_lookahead_skips_them():
    p, _ = packer(BackfillPolicy(), cores=1, node_count=2)
    p.enqueue([job(name="a"), job(name="b"), job(name="c")])
    assert names(p.admit()) == ["a", "b"]
    p.allocation.mark_down([1])
    (chained,) = p.chain()
    assert chained.placement.ranks == (0,)
    assert p.allocation.mark_up([1]) == [1]


def test_a_requeued_job_goes_back_to_the_queue_with_its_successor():
    p, _ = packer(BackfillPolicy(), cores=1, node_count=1)
    p.enqueue([job(name="a"), job(name="b")])
    (a,) = p.admit()
    (b,) = p.chain()
    p.requeue(a)
    assert names(p.queue) == ["a", "b"]
    assert p.running == {}
    assert p.allocation.free_cores == 1
    assert a.placement is None
    assert (a.successor, b.after) == (None, None)


class _CountingAllocation(Allocation):
    places = 0

    def place(self, request):
        _CountingAllocation.places += 1
        return super().place(request)


def test_an_admission_round_costs_the_jobs_it_starts_not_the_queue_length():
    specs = [NodeSpec(r, f"n{r}", tuple(range(8)), ("0", "1")) for r in range(4)]
    p = Packer(_CountingAllocation(specs), BackfillPolicy(), Clock())
    p.enqueue([job(cores=7, name=f"fill{i}") for i in range(4)])  # one core left a node
    p.admit()
    p.enqueue([job(cores=2) for _ in range(1000)])  # does not fit now
    p.enqueue([job(cores=1, gpus=3) for _ in range(1000)])  # never: 2 GPUs a node
    p.enqueue([job(cores=9) for _ in range(1000)])  # never: 8 cores a node
    p.enqueue([job(cores=1, name=f"small{i}") for i in range(5)])
    _CountingAllocation.places = 0
    started = p.admit()
    # each blocked shape is tried once (not once per queued job), then the
    # small jobs start until the allocation is full
    assert names(started) == ["small0", "small1", "small2", "small3"]
    assert _CountingAllocation.places == 3 + 4
    assert len(p.queue) == 3001
