"""A full machine on a virtual clock: the plugin's own cost at 9,408 nodes and 100,000 jobs.

    uv run python benchmarks/full_machine.py    # 9,408 nodes; 10,000 then 100,000 jobs
    uv run python benchmarks/full_machine.py --nodes 200 --jobs 5000 --small-jobs 500
    uv run python benchmarks/full_machine.py --order arrival   # instead of longest-first
    PATH=/opt/flux/bin:$PATH uv run python benchmarks/full_machine.py --nodes 1000 --flux 2000

The real dispatcher (its own thread), packer, backfill policy and allocation
run against a simulated backend: a launched job "runs" for its declared
runtime on a virtual clock (no processes, no sleeping; the backend's ``wait``
jumps the clock to the next job end). Nodes are Frontier's (56 usable cores,
8 GPUs); jobs are a seeded mix of one-core tasks, 7 cores + 1 GPU tasks,
exclusive whole nodes and 2-node MPI jobs (16 ranks of 7 cores + 1 GPU), all
queued at once, in the plugin's default queue order (``--order``). Each size
runs in a fresh interpreter, so its peak memory is its own.

Printed per run: CPU of the dispatcher thread (plugin CPU: packer, policy,
allocation, dispatcher; the simulated backend's share is measured and shown
apart), ms per placement and jobs started per CPU second, the makespan
against the lower bound (max of core-seconds / cores, GPU-seconds / GPUs, the
longest job), peak memory; then the 10k -> 100k growth of CPU and memory per
job, and the cost of one ``Allocation.place`` on the full machine, half full.

``--flux JOBS``: the same jobs under real Flux instead (see ``_flux_fake.py``):
a one-broker test instance claiming ``--nodes`` fake nodes, jobs in Flux's test
execution mode, the plugin's jobs/s against raw submission of the same jobspecs.
"""

from __future__ import annotations

import argparse
import array
import heapq
import json
import logging
import math
import random
import resource
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass

from _flux_fake import run_in_flux
from _frontier import CORES, GPUS, MIX, machine, work, workload

from snakemake_executor_plugin_matensemble.backends.base import (
    Backend,
    JobFinished,
    JobStatus,
    LaunchSpec,
)
from snakemake_executor_plugin_matensemble.dispatcher import Dispatcher
from snakemake_executor_plugin_matensemble.packing.allocation import Allocation
from snakemake_executor_plugin_matensemble.packing.deadline import RuntimeEstimator
from snakemake_executor_plugin_matensemble.packing.nodes import NodeSpec
from snakemake_executor_plugin_matensemble.packing.ordering import ORDERS, make_order
from snakemake_executor_plugin_matensemble.packing.packer import Packer
from snakemake_executor_plugin_matensemble.packing.policies import BackfillPolicy
from snakemake_executor_plugin_matensemble.packing.queue import JobTicket
from snakemake_executor_plugin_matensemble.settings import ExecutorSettings


class VirtualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class SimulatedBackend(Backend):
    """Jobs end after their runtime on the virtual clock; ``wait`` jumps to the next end."""

    name = "simulated"
    supports_lookahead = False

    def __init__(self, clock: VirtualClock, runtimes: dict[int, int]):
        self.clock = clock
        self.runtimes = runtimes
        self._ends: list[tuple[float, int]] = []
        self._woken = threading.Event()
        #: CPU seconds spent inside this backend (not the plugin's)
        self.cpu_s = 0.0
        #: per launch: start, end, cores held (for the utilization figures)
        self.starts, self.ends, self.cores = array.array("d"), array.array("d"), array.array("d")

    def discover(self) -> list[NodeSpec]:
        return []

    def launch(self, spec: LaunchSpec, placement, after: int | None = None) -> str:
        began = time.thread_time()
        end = self.clock.now + self.runtimes[spec.key]
        heapq.heappush(self._ends, (end, spec.key))
        self.starts.append(self.clock.now)
        self.ends.append(end)
        self.cores.append(placement.ncores)
        self.cpu_s += time.thread_time() - began
        return f"sim-{spec.key}"

    def wait(self, timeout: float | None) -> list[JobFinished]:
        if not self._ends:
            self._woken.wait(timeout)
            self._woken.clear()
            return []
        began = time.thread_time()
        ends = self._ends
        now = self.clock.now = ends[0][0]
        events = []
        while ends and ends[0][0] == now:
            _, key = heapq.heappop(ends)
            events.append(JobFinished(key, JobStatus.SUCCESS, "done", 0, None, now))
        self.cpu_s += time.thread_time() - began
        return events

    def wake(self) -> None:
        self._woken.set()

    def cancel_all(self) -> list[JobFinished]:
        return []

    def close(self) -> None:
        pass

    def busy_while_queued(self, cores: int) -> float:
        """The share of all cores held by jobs from 0 until the last job started."""
        until = max(self.starts)
        if until <= 0:
            return 1.0
        held = sum(
            n * (min(end, until) - start)
            for start, end, n in zip(self.starts, self.ends, self.cores, strict=True)
        )
        return held / (cores * until)


class Listener:
    """Counts finished jobs; says when all are done."""

    def __init__(self, jobs: int):
        self.jobs = jobs
        #: the keys of the jobs that finished (each once)
        self.finished: set[int] = set()
        self.makespan = 0.0
        self.done = threading.Event()

    def on_started(self, ticket, backend_id, time, instance="") -> None:
        pass

    def on_finished(self, ticket, result) -> None:
        self.finished.add(ticket.key)
        self.makespan = max(self.makespan, result.time)
        if len(self.finished) == self.jobs:
            self.done.set()

    def on_withdrawn(self, tickets, reason) -> None:
        raise AssertionError(f"{len(tickets)} job(s) withdrawn ({reason})")

    def on_crash(self, error, tickets) -> None:
        self.done.set()

    def on_tick(self) -> None:
        pass


def launch_spec(ticket: JobTicket) -> LaunchSpec:
    return LaunchSpec(ticket.key, "true", "sim", "/", {}, "/dev/null", ticket.request)


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


@dataclass
class Run:
    nodes: int
    jobs: int
    plugin_cpu_s: float
    backend_cpu_s: float
    wall_s: float
    makespan_s: float
    lower_bound_s: float
    base_mb: float
    peak_mb: float
    #: share of the cores busy until the last job started (the queue emptied)
    busy_while_queued: float
    #: distinct jobs that finished, and launches made (each job once: both = jobs)
    finished: int = 0
    launched: int = 0

    @property
    def ms_per_job(self) -> float:
        return 1000 * self.plugin_cpu_s / self.jobs

    @property
    def jobs_per_cpu_s(self) -> float:
        return self.jobs / self.plugin_cpu_s

    @property
    def kb_per_job(self) -> float:
        return 1024 * (self.peak_mb - self.base_mb) / self.jobs


def simulate(
    nodes: int,
    jobs: int,
    seed: int,
    reserve_after: float,
    big_first: bool = False,
    order: str = ExecutorSettings.order,
) -> Run:
    """One run of ``jobs`` jobs on ``nodes`` nodes; every job must finish.
    ``big_first``: whole-node and MPI jobs get a higher priority (a rule's
    ``priority:``); ``order``: the queue order (``--matensemble-order``)."""
    specs = machine(nodes)
    base_mb = rss_mb()
    mix = workload(jobs, seed)
    core_s, gpu_s, longest = work(mix)
    # no schedule ends sooner: work over capacity per resource, or the longest job
    bound = max(core_s / (nodes * CORES), gpu_s / (nodes * GPUS), longest)
    clock = VirtualClock()
    tickets = [
        JobTicket(key, request, priority if big_first else 0)
        for key, (request, _, priority) in enumerate(mix)
    ]
    backend = SimulatedBackend(clock, {key: runtime for key, (_, runtime, _) in enumerate(mix)})
    packer = Packer(
        Allocation(specs),
        BackfillPolicy(reserve_after),
        clock=clock,
        order=make_order(order, RuntimeEstimator()),
    )
    listener = Listener(jobs)
    dispatcher = Dispatcher(packer, backend, listener, launch_spec, idle_timeout=1.0)
    began = time.perf_counter()
    dispatcher.submit(tickets)
    dispatcher.start()
    listener.done.wait()
    wall = time.perf_counter() - began
    cpu = dispatcher.cpu_s
    dispatcher.stop(timeout=10)
    if len(listener.finished) != jobs:
        raise SystemExit(f"only {len(listener.finished)} of {jobs} jobs finished")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    busy = backend.busy_while_queued(nodes * CORES)
    return Run(
        nodes,
        jobs,
        cpu - backend.cpu_s,
        backend.cpu_s,
        wall,
        listener.makespan,
        bound,
        base_mb,
        peak_mb,
        busy,
        len(listener.finished),
        len(backend.starts),
    )


def placement_cost(nodes: int, seed: int, calls: int = 20_000) -> dict[str, float]:
    """µs per ``Allocation.place`` of each shape on ``nodes`` nodes filled to about half."""
    rng = random.Random(seed)
    allocation = Allocation(machine(nodes))
    shapes = [entry[1] for entry in MIX]
    while allocation.free_cores > nodes * CORES // 2:
        placement = allocation.place(rng.choice(shapes))
        if placement is not None:
            allocation.take(placement)
    costs = {}
    for request in shapes:
        began = time.process_time()
        for _ in range(calls):
            allocation.place(request)
        costs[request.describe()] = 1e6 * (time.process_time() - began) / calls
    return costs


def run_child(
    nodes: int, jobs: int, seed: int, reserve_after: float, big_first: bool, order: str
) -> Run:
    """:func:`simulate` in a fresh interpreter (its own peak memory)."""
    argv = [str(nodes), str(jobs), str(seed), str(reserve_after), str(int(big_first)), order]
    out = subprocess.run(
        [sys.executable, __file__, "--child", *argv],
        check=True,
        capture_output=True,
        text=True,
    )
    return Run(**json.loads(out.stdout.splitlines()[-1]))


def report(runs: list[Run], costs: dict[str, float]) -> str:
    lines = [
        "| nodes | jobs | plugin CPU s | ms/job | jobs/CPU s | sim. backend CPU s "
        "| wall s | makespan / lower bound | cores busy while queued | peak RSS MB | KB/job |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        lines.append(
            f"| {run.nodes:,} | {run.jobs:,} | {run.plugin_cpu_s:.2f} | {run.ms_per_job:.3f} "
            f"| {run.jobs_per_cpu_s:,.0f} | {run.backend_cpu_s:.2f} | {run.wall_s:.1f} "
            f"| {run.makespan_s:,.0f} / {run.lower_bound_s:,.0f} s = "
            f"{run.makespan_s / run.lower_bound_s:.3f}x | {100 * run.busy_while_queued:.1f}% "
            f"| {run.peak_mb:.0f} "
            f"| {run.kb_per_job:.2f} |"
        )
    if len(runs) == 2:
        small, big = runs
        lines.append(
            f"\n{small.jobs:,} jobs on {small.nodes:,} nodes -> {big.jobs:,} on {big.nodes:,}: "
            f"plugin CPU per job x"
            f"{big.ms_per_job / small.ms_per_job:.2f}, memory per job x"
            f"{big.kb_per_job / small.kb_per_job:.2f}"
        )
    lines.append(f"\nAllocation.place on {runs[-1].nodes:,} nodes, half full (µs per call):")
    lines.extend(f"  {shape}: {us:.1f}" for shape, us in costs.items())
    return "\n".join(lines)


def load_range(figures: dict) -> str:
    """The 1-minute load average seen during a round, lowest-highest."""
    low, high = figures.get("load", (math.nan, math.nan))
    return f"{low:.1f}-{high:.1f}"


def flux_report(rounds: list[dict], scheduler: str = "fluxion") -> str:
    """A row per round (the modes alternate in one instance; odd rounds in the
    order plugin, scheduler matching, raw, executor, even rounds reversed),
    and the median ratios."""
    first = rounds[0]
    lines = [
        f"real Flux ({scheduler}), {first['nodes']:,} fake nodes, {first['jobs']:,} jobs in "
        f"test execution, {len(rounds)} round(s):",
        "| round | plugin jobs/s | plugin, scheduler matching, jobs/s | raw jobs/s "
        "| FluxExecutor alone jobs/s | plugin / raw | plugin, scheduler matching / raw "
        "| plugin CPU ms/job | load average |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    ratios, scheduled_ratios, cpu = [], [], []
    for number, figures in enumerate(rounds, 1):
        jobs = figures["jobs"]
        plugin = jobs / figures["plugin_wall_s"]
        scheduled = jobs / figures["plugin_scheduled_wall_s"]
        raw = jobs / figures["raw_wall_s"]
        executor = jobs / figures["executor_wall_s"]
        ratios.append(plugin / raw)
        scheduled_ratios.append(scheduled / raw)
        cpu.append(1000 * figures["plugin_cpu_s"] / jobs)
        lines.append(
            f"| {number} | {plugin:.0f} | {scheduled:.0f} | {raw:.0f} | {executor:.0f} "
            f"| {plugin / raw:.2f}x | {scheduled / raw:.2f}x | {cpu[-1]:.2f} "
            f"| {load_range(figures)} |"
        )
    lines.append(
        f"median plugin / raw: {statistics.median(ratios):.2f}x "
        f"(range {min(ratios):.2f}-{max(ratios):.2f}); scheduler matching: "
        f"{statistics.median(scheduled_ratios):.2f}x; plugin CPU "
        f"{statistics.median(cpu):.2f} ms/job; every job of every mode finished"
    )
    return "\n".join(lines)


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        logging.getLogger("snakemake.logging.matensemble").setLevel(logging.WARNING)
        nodes, jobs, seed, reserve_after, big_first, order = sys.argv[2:8]
        run = simulate(
            int(nodes), int(jobs), int(seed), float(reserve_after), big_first == "1", order
        )
        print(json.dumps(asdict(run)))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=9408)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument(
        "--small-jobs", type=int, default=10_000, help="the smaller run to compare with (0: none)"
    )
    parser.add_argument(
        "--small-nodes", type=int, help="nodes of the smaller run (default: --nodes)"
    )
    parser.add_argument(
        "--big-first",
        action="store_true",
        help="whole-node and MPI jobs get a higher priority (a rule's priority:)",
    )
    parser.add_argument(
        "--order",
        choices=tuple(ORDERS),
        default=ExecutorSettings.order,
        help="the queue order among equal priorities (--matensemble-order; default: the "
        "plugin's, %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument(
        "--reserve-after", type=float, default=60.0, help="the backfill policy's reserve-after"
    )
    parser.add_argument(
        "--flux",
        type=int,
        metavar="JOBS",
        help="instead: JOBS jobs under real Flux (test execution, --nodes fake nodes), "
        "the plugin against raw submission of the same jobspecs",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="with --flux: how many times the modes alternate in the instance",
    )
    parser.add_argument(
        "--scheduler",
        choices=("fluxion", "simple"),
        default="fluxion",
        help="with --flux: the instance's scheduler (Fluxion or sched-simple)",
    )
    parser.add_argument(
        "--children",
        type=int,
        default=0,
        metavar="K",
        help="with --flux: also the plugin with K child instances (see _flux_children.py)",
    )
    args = parser.parse_args()
    if args.flux and args.children:
        from _flux_children import children_report, run_children_in_flux

        rounds = run_children_in_flux(
            args.nodes,
            CORES,
            GPUS,
            args.flux,
            args.seed,
            args.rounds,
            args.scheduler,
            args.children,
        )
        print(children_report(rounds, args.scheduler))
        return
    if args.flux:
        rounds = run_in_flux(
            args.nodes, CORES, GPUS, args.flux, args.seed, args.rounds, args.scheduler
        )
        print(flux_report(rounds, args.scheduler))
        return
    sizes = [(args.small_nodes or args.nodes, args.small_jobs), (args.nodes, args.jobs)]
    runs = [
        run_child(nodes, jobs, args.seed, args.reserve_after, args.big_first, args.order)
        for nodes, jobs in sizes
        if jobs
    ]
    print(f"queue order {args.order}, backfill (reserve after {args.reserve_after:g} s)")
    print(report(runs, placement_cost(args.nodes, args.seed)))
    if not math.isfinite(runs[-1].lower_bound_s):
        raise SystemExit("no lower bound")


if __name__ == "__main__":
    main()
