"""The ``matensemble`` scheduler plugin: the same jobs as Snakemake's greedy
selector, in the same order, in linear time (Snakemake releases with scheduler
plugins only).

The fake jobs carry what Snakemake's scheduler reads of a real job: ``priority``,
``input`` and ``scheduler_resources`` with ``_nodes: 1`` and ``_job_count: 1``
(as every real job and group job has). Group jobs and pipe groups appear as
Snakemake shows them to a selector: one job whose resources combine its
members'. Every limit Snakemake passes is made to bind in some workload: ``_cores``
(a local run's --cores), ``_nodes`` (--jobs of an executor plugin), ``_job_count``
(--max-jobs-per-timespan) and --resources.
"""

import logging
import random
import sys

import pytest

pytest.importorskip(
    "snakemake_interface_scheduler_plugins",
    reason="this Snakemake has no scheduler plugins (they came with a later 9.x release)",
)
greedy = pytest.importorskip(
    "snakemake.scheduling.greedy", reason="this Snakemake has no greedy scheduler plugin"
)

from snakemake_scheduler_plugin_matensemble import Scheduler, SchedulerSettings  # noqa: E402

UNLIMITED = sys.maxsize


class Path(str):
    def __new__(cls, name, temp=False):
        path = super().__new__(cls, name)
        path.temp = temp
        return path

    def is_flagged(self, flag):
        return flag == "temp" and self.temp


class Job:
    """A ready job; counts every read of its attributes and every comparison with
    it (work done on the jobs themselves: a scan over them shows up here)."""

    work = 0

    def __init__(self, priority, resources, inputs=(), name="job"):
        self.priority = priority
        self.scheduler_resources = {"_nodes": 1, "_job_count": 1, **resources}
        self.input = list(inputs)
        self.name = name

    def __getattribute__(self, attribute):
        if not attribute.startswith("__"):
            Job.work += 1
        return object.__getattribute__(self, attribute)

    def __eq__(self, other):
        Job.work += 1
        return self is other

    def __hash__(self):
        Job.work += 1
        return id(self)

    def __repr__(self):
        return f"{object.__getattribute__(self, 'name')}"


def group(members, name, pipe=False):
    """A group job as Snakemake's selector sees it: the highest member priority,
    the members' inputs, and one resource set: a pipe group's members run at once
    (their cores add up), a plain group's run one after another (the largest)."""
    combine = sum if pipe else max
    resources = {}
    for member in members:
        for key, value in member.scheduler_resources.items():
            if isinstance(value, str):
                resources[key] = value  # a string resource (a partition) is not added up
            elif key not in ("_nodes", "_job_count"):
                resources[key] = combine((resources.get(key, 0), value))
    inputs = [f for member in members for f in member.input]
    return Job(max(member.priority for member in members), resources, inputs, name)


def _ours():
    return Scheduler(None, SchedulerSettings(), logging.getLogger("test"))


def _snakemakes():
    return greedy.Scheduler(None, greedy.SchedulerSettings(), logging.getLogger("test"))


def _both(jobs, available, sizes):
    ours = _ours().select_jobs(jobs, jobs, dict(available), sizes)
    theirs = _snakemakes().select_jobs(jobs, jobs, dict(available), sizes)
    return ours, theirs


def _workload(rng, count):
    """Single jobs, groups and pipe groups; few distinct priorities, sizes and
    inputs, so that many jobs tie on every key greedy ranks by."""
    files = [Path(f"f{i}", temp=i % 3 == 0) for i in range(6)]
    sizes = {f: rng.choice([0, 0, 10, 1000]) for f in files}

    def single(name):
        resources = {"_cores": rng.choice([1, 1, 2, 4]), "mem_mb": rng.choice([0, 500, 1000])}
        if rng.random() < 0.2:
            resources["gpu"] = rng.choice([0, 1])
        if rng.random() < 0.1:
            resources["partition"] = "gpu"  # a string resource limits nothing
        inputs = rng.sample(files, rng.choice([0, 0, 1, 2]))
        return Job(rng.choice([0, 0, 0, 1, 5]), resources, inputs, name)

    jobs = []
    for i in range(count):
        kind = rng.random()
        if kind < 0.15:
            jobs.append(group([single(f"m{i}.{k}") for k in range(3)], f"group{i}"))
        elif kind < 0.25:
            jobs.append(group([single(f"p{i}.{k}") for k in range(2)], f"pipe{i}", pipe=True))
        else:
            jobs.append(single(f"job{i}"))
    return jobs, sizes


#: the limits of each kind of run; the named limit is the one that must bind
SCENARIOS = {
    # a local run: --cores
    "_cores": lambda rng: {"_cores": rng.randint(4, 40), "_nodes": UNLIMITED},
    # an executor plugin's run: -j N is _nodes, cores are unlimited
    "_nodes": lambda rng: {"_cores": UNLIMITED, "_nodes": rng.randint(1, 30)},
    # --max-jobs-per-timespan: the jobs still free in this timespan
    "_job_count": lambda rng: {"_cores": UNLIMITED, "_nodes": UNLIMITED, "_job_count": 7},
    # --resources mem_mb=... gpu=...
    "mem_mb": lambda rng: {"_cores": UNLIMITED, "_nodes": UNLIMITED, "mem_mb": 6000, "gpu": 9},
    "gpu": lambda rng: {"_cores": UNLIMITED, "_nodes": UNLIMITED, "gpu": rng.randint(0, 2)},
}


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("binding", sorted(SCENARIOS))
def test_selects_the_jobs_snakemakes_greedy_selector_selects(binding, seed):
    rng = random.Random(seed)
    jobs, sizes = _workload(rng, 80)
    available = {"_job_count": UNLIMITED, **SCENARIOS[binding](rng)}
    ours, theirs = _both(jobs, available, sizes)
    assert ours == theirs  # the same jobs, in the same order
    # the limit named bound: without it, greedy would have selected more
    lifted = {**available, binding: UNLIMITED}
    assert len(_snakemakes().select_jobs(jobs, jobs, lifted, sizes)) > len(theirs)


def test_the_first_of_equal_jobs_is_taken_first_as_greedy_does():
    """Equal priority, equal inputs, equal sizes: only the order given decides."""
    jobs = [Job(0, {"_cores": 2}, name=f"twin{i}") for i in range(6)]
    for available in ({"_cores": UNLIMITED, "_nodes": 2}, {"_cores": 5, "_nodes": UNLIMITED}):
        available["_job_count"] = UNLIMITED
        ours, theirs = _both(jobs, available, {})
        assert theirs == jobs[:2]
        assert ours == theirs


def test_ties_broken_by_order_even_when_sizes_differ():
    """Equal rank, a big job among small ones: greedy takes the first that fits."""
    small = [Job(0, {"_cores": 1}, name=f"small{i}") for i in range(3)]
    big = Job(0, {"_cores": 3}, name="big")
    for jobs in ([big, *small], [small[0], big, *small[1:]], [*small, big]):
        available = {"_cores": 3, "_nodes": UNLIMITED, "_job_count": UNLIMITED}
        ours, theirs = _both(jobs, available, {})
        assert ours == theirs, jobs


def test_with_unlimited_jobs_every_ready_job_is_handed_over():
    jobs, sizes = _workload(random.Random(1), 500)
    available = {"_cores": UNLIMITED, "_nodes": UNLIMITED, "_job_count": UNLIMITED}
    assert _ours().select_jobs(jobs, jobs, available, sizes) == jobs


def test_higher_priority_first():
    low, high = Job(0, {"_cores": 4}), Job(3, {"_cores": 4})
    available = {"_cores": 4, "_nodes": UNLIMITED, "_job_count": UNLIMITED}
    assert _ours().select_jobs([low, high], [low, high], available, {}) == [high]


def test_where_ilp_differs_a_big_job_and_two_small_ones():
    """The docs' example: --resources io=100, three ready jobs of equal priority,
    one needing io=60 (with the largest input) and two needing io=50. greedy and
    matensemble start the big one; Snakemake's default ilp starts the two small
    ones (after priority it maximizes the cores in use)."""
    milp = pytest.importorskip("snakemake.scheduling.milp", reason="no ilp selector")
    pytest.importorskip("pulp", reason="the ilp selector needs pulp")
    data = Path("data")
    big = Job(0, {"_cores": 1, "io": 60}, [data], "big")
    small = [Job(0, {"_cores": 1, "io": 50}, name=f"small{i}") for i in range(2)]
    jobs = [*small, big]
    available = {"_cores": UNLIMITED, "_nodes": UNLIMITED, "_job_count": UNLIMITED, "io": 100}
    ours, theirs = _both(jobs, available, {data: 10**6})
    assert ours == theirs == [big]
    ilp = milp.Scheduler(None, milp.SchedulerSettings(), logging.getLogger("test"))
    picked = ilp.select_jobs(jobs, jobs, dict(available), {data: 10**6})
    assert picked is not None, "the ilp solver did not solve (no CBC?)"
    assert set(map(id, picked)) == set(map(id, small))


def _cost(selector, jobs, available, sizes):
    """(work on the jobs, lines run in the selector's own module) for one selection."""
    module = sys.modules[type(selector).__module__].__file__
    lines = 0

    def trace(frame, event, arg):
        nonlocal lines
        if frame.f_code.co_filename != module:
            return None
        if event == "line":
            lines += 1
        return trace

    Job.work = 0
    sys.settrace(trace)
    try:
        selector.select_jobs(jobs, jobs, dict(available), sizes)
    finally:
        sys.settrace(None)
    return Job.work, lines


@pytest.mark.parametrize("binding", ["_nodes", "_cores"])
def test_cost_grows_linearly_with_the_ready_jobs(binding):
    """Counted, not timed, at n and 4n ready jobs: reads of the jobs' attributes
    and comparisons with them (a scan over the jobs), and the lines the selector's
    module runs (a scan over anything). Linear work grows 4x; greedy's pass over
    the ready jobs per job selected grows about 16x in lines."""
    n = 300

    def setup(count):
        jobs, sizes = _workload(random.Random(3), count)
        limit = {"_nodes": count // 2, "_cores": count}[binding]  # about half of them fit
        available = {"_cores": UNLIMITED, "_nodes": UNLIMITED, "_job_count": UNLIMITED}
        return jobs, {**available, binding: limit}, sizes

    (work, lines), (work_4n, lines_4n) = (_cost(_ours(), *setup(c)) for c in (n, 4 * n))
    assert work_4n <= 4.5 * work, (work, work_4n)
    assert lines_4n <= 4.5 * lines, (lines, lines_4n)
    # (greedy at a smaller n: tracing its quadratic work at 4 x 300 takes seconds)
    (_, theirs), (_, theirs_4n) = (_cost(_snakemakes(), *setup(c)) for c in (40, 160))
    assert theirs_4n >= 10 * theirs, (theirs, theirs_4n)  # the count sees a quadratic scan
