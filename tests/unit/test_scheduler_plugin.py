"""The ``matensemble`` scheduler plugin: the same jobs as Snakemake's greedy
selector, in linear time (Snakemake releases with scheduler plugins only)."""

import logging
import random
import sys
import time

import pytest

pytest.importorskip(
    "snakemake_interface_scheduler_plugins",
    reason="this Snakemake has no scheduler plugins (they came with a later 9.x release)",
)
greedy = pytest.importorskip(
    "snakemake.scheduling.greedy", reason="this Snakemake has no greedy scheduler plugin"
)

from snakemake_scheduler_plugin_matensemble import Scheduler, SchedulerSettings  # noqa: E402


class Path(str):
    def __new__(cls, name, temp=False):
        path = super().__new__(cls, name)
        path.temp = temp
        return path

    def is_flagged(self, flag):
        return flag == "temp" and self.temp


class Job:
    def __init__(self, priority, resources, inputs=()):
        self.priority = priority
        self.scheduler_resources = resources
        self.input = list(inputs)

    def __repr__(self):
        return f"Job({self.priority}, {self.scheduler_resources})"


def _ours():
    return Scheduler(None, SchedulerSettings(), logging.getLogger("test"))


def _snakemakes():
    return greedy.Scheduler(None, greedy.SchedulerSettings(), logging.getLogger("test"))


def _workload(rng, jobs):
    files = [Path(f"f{i}", temp=rng.random() < 0.3) for i in range(20)]
    sizes = {f: rng.choice([0, 10, 1000, 10**6]) for f in files}
    out = []
    for _ in range(jobs):
        resources = {"_cores": rng.randint(1, 8), "_nodes": 1, "mem_mb": rng.randint(0, 4000)}
        if rng.random() < 0.2:
            resources["gpu"] = rng.randint(0, 2)
        if rng.random() < 0.1:
            resources["partition"] = "gpu"  # a string resource limits nothing
        out.append(Job(rng.choice([0, 0, 0, 1, 5]), resources, rng.sample(files, 3)))
    return out, sizes


@pytest.mark.parametrize("seed", range(8))
def test_selects_the_jobs_snakemakes_greedy_selector_selects(seed):
    rng = random.Random(seed)
    jobs, sizes = _workload(rng, 120)
    available = {
        "_cores": rng.randint(8, 200),
        "_nodes": sys.maxsize,
        "_job_count": sys.maxsize,
        "mem_mb": rng.randint(4000, 100000),
        "gpu": rng.randint(0, 6),
    }
    ours = _ours().select_jobs(jobs, jobs, dict(available), sizes)
    theirs = _snakemakes().select_jobs(jobs, jobs, dict(available), sizes)
    assert set(map(id, ours)) == set(map(id, theirs))
    assert 0 < len(ours) < len(jobs)  # the limits bit: a real choice was made


def test_with_unlimited_jobs_every_ready_job_is_handed_over():
    jobs, sizes = _workload(random.Random(1), 500)
    available = {"_cores": sys.maxsize, "_nodes": sys.maxsize, "_job_count": sys.maxsize}
    assert len(_ours().select_jobs(jobs, jobs, available, sizes)) == 500


def test_respects_every_numeric_limit():
    jobs = [Job(0, {"_cores": 2, "mem_mb": 600}) for _ in range(10)]
    selected = _ours().select_jobs(jobs, jobs, {"_cores": 100, "mem_mb": 2000}, {})
    assert len(selected) == 3  # memory binds
    selected = _ours().select_jobs(jobs, jobs, {"_cores": 5, "mem_mb": 10**6}, {})
    assert len(selected) == 2  # cores bind


def test_higher_priority_first():
    low, high = Job(0, {"_cores": 4}), Job(3, {"_cores": 4})
    assert _ours().select_jobs([low, high], [low, high], {"_cores": 4}, {}) == [high]


def test_cost_grows_linearly_with_the_ready_jobs():
    """Counted, not timed: one resource look-up per job and limit (the greedy
    selector looks at every remaining job for each job it selects)."""
    lookups = 0

    class Counting(dict):
        def get(self, *args):
            nonlocal lookups
            lookups += 1
            return super().get(*args)

    def jobs(n):
        return [Job(0, Counting(_cores=1, _nodes=1)) for _ in range(n)]

    available = {"_cores": sys.maxsize, "_nodes": sys.maxsize}
    for n in (1_000, 10_000):
        lookups = 0
        ready = jobs(n)
        began = time.process_time()
        _ours().select_jobs(ready, ready, available, {})
        assert lookups == 2 * n, (n, lookups, time.process_time() - began)
