"""Queue orders: Snakemake priority first, then arrival or the longest runtime."""

import pytest

from snakemake_executor_plugin_matensemble.errors import SettingsError
from snakemake_executor_plugin_matensemble.packing.deadline import RuntimeEstimator
from snakemake_executor_plugin_matensemble.packing.ordering import (
    ORDERS,
    ArrivalOrder,
    LongestFirstOrder,
    make_order,
)
from snakemake_executor_plugin_matensemble.packing.policies import BackfillPolicy, FifoPolicy
from snakemake_executor_plugin_matensemble.packing.queue import JobQueue
from snakemake_executor_plugin_matensemble.settings import ExecutorSettings

from .packing import job, names, packer


def _line(order, tickets) -> list[str]:
    queue = JobQueue(order)
    for ticket in tickets:
        queue.push(ticket)
    return names(queue.drain())


def test_arrival_is_priority_then_first_handed_over():
    tickets = [job(walltime=60, name="a"), job(walltime=600, name="b"), job(priority=1, name="c")]
    assert _line(ArrivalOrder(), tickets) == ["c", "a", "b"]


def test_longest_first_puts_long_jobs_ahead_among_equal_priority():
    tickets = [
        job(walltime=60, name="short"),
        job(walltime=600, name="long"),
        job(walltime=300, name="mid"),
        job(walltime=600, name="long-later"),
        job(walltime=10, priority=1, name="urgent-short"),
    ]
    order = LongestFirstOrder(RuntimeEstimator())
    # priority wins over runtime; equal runtimes keep arrival order
    assert _line(order, tickets) == ["urgent-short", "long", "long-later", "mid", "short"]


def test_longest_first_counts_an_unknown_runtime_as_the_longest():
    tickets = [job(walltime=600, name="known"), job(name="unknown")]
    assert _line(LongestFirstOrder(RuntimeEstimator()), tickets) == ["unknown", "known"]


def test_longest_first_uses_earlier_runs_when_no_runtime_is_declared():
    estimator = RuntimeEstimator("journal", {"slow": 900.0, "quick": 5.0})
    tickets = [
        job(rule="quick", name="q"),
        job(rule="slow", name="s"),
        job(walltime=60, rule="slow", name="declared"),  # the declared runtime wins
    ]
    assert _line(LongestFirstOrder(estimator), tickets) == ["s", "declared", "q"]


def test_without_runtimes_longest_first_is_arrival():
    tickets = [job(name=str(i), cores=1 + i % 2) for i in range(6)]
    arrival = _line(ArrivalOrder(), [*tickets])
    assert _line(LongestFirstOrder(RuntimeEstimator()), tickets) == arrival


@pytest.mark.parametrize("policy", [BackfillPolicy(), FifoPolicy()], ids=["backfill", "fifo"])
def test_the_packer_starts_jobs_in_the_order_given(policy):
    """One core: jobs start one at a time, in line."""
    order = LongestFirstOrder(RuntimeEstimator())
    p, clock = packer(policy, cores=1, order=order)
    p.enqueue([job(walltime=w, name=f"{w}s") for w in (60, 300, 120)])
    started = []
    while p.queue or p.running:
        for ticket in p.admit():
            started.append(ticket.payload)
            clock.now += ticket.request.walltime_s
            p.finish(ticket)
    assert started == ["300s", "120s", "60s"]


def test_make_order_and_settings():
    assert set(ORDERS) == {"arrival", "longest-first"}
    assert isinstance(make_order("arrival", RuntimeEstimator()), ArrivalOrder)
    estimator = RuntimeEstimator()
    assert make_order("longest-first", estimator).estimator is estimator
    assert ExecutorSettings().order == "longest-first"
    with pytest.raises(SettingsError) as error:
        ExecutorSettings(order="shortest").check()
    message = str(error.value)
    assert "order" in message
    assert "shortest" in message
    assert "arrival" in message
