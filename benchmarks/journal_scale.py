"""The journal, the end-of-run summary and ``matensemble-report`` at 10,000 and 100,000 jobs.

    uv run python benchmarks/journal_scale.py                  # 10,000 then 100,000 jobs
    uv run python benchmarks/journal_scale.py --jobs 2000 20000 --nodes 100

Writes a realistic journal per size through the plugin's own writer
(:class:`Journal`): an allocation of ``--nodes`` Frontier nodes (56 cores, 8
GPUs), jobs of six rules with wildcards, a seeded mix of one-core tasks,
7 cores + 1 GPU tasks, whole nodes and 2-node MPI jobs, each "run" on a
virtual schedule (the earliest free slot of its shape), 2% failing once and
retried, 0.3% failing for good, a few cancelled, and a drain and an undrain.

Then, each in a fresh interpreter so that its peak memory is its own:

- ``write``: the journal written through ``Journal`` (its own CPU, bytes per job);
- ``summary``: what the end of a run does (``observer.run_ended`` today):
  ``read_journal``, ``summarize``, ``summary_lines``, ``resource_lines``,
  ``chain_lines``; and the same lines by ``summary_text.end_of_run_lines`` (the
  journal read with the garbage collector paused);
- ``report``: ``report.make_report`` (timeline, utilization, tables, page).

Printed per size: journal bytes per job, wall seconds of each step, and per
job: the CPU microseconds of each step (CPU, not wall: this machine is
shared) and the peak memory above the interpreter's own (after imports);
then the 10k -> 100k growth of each per-job figure (the goal: at most 1.2x).
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from snakemake_executor_plugin_matensemble.observing.journal import Journal
from snakemake_executor_plugin_matensemble.packing.allocation import Allocation
from snakemake_executor_plugin_matensemble.packing.nodes import NodeShare, NodeSpec, Placement
from snakemake_executor_plugin_matensemble.packing.resource_request import ResourceRequest

CORES, GPUS = 56, 8
RULES = ("relax", "md", "dft", "analyze", "train_potential", "aggregate")
#: (share of jobs, request, runtime range s, slots per node, cores per slot, gpus per slot,
#: nodes per job)
SHAPES = (
    (0.45, ResourceRequest(), (60, 900), 48, 1, 0, 1),
    (0.35, ResourceRequest(cores_per_task=7, gpus_per_task=1), (120, 900), 8, 7, 1, 1),
    (0.12, ResourceRequest(exclusive=True), (300, 1200), 1, 56, 8, 1),
    (
        0.08,
        ResourceRequest(tasks=16, cores_per_task=7, gpus_per_task=1, nodes=2),
        (300, 1200),
        1,
        56,
        8,
        2,
    ),
)


def machine(nodes: int) -> list[NodeSpec]:
    cores = tuple(range(CORES))
    gpus = tuple(str(g) for g in range(GPUS))
    return [NodeSpec(rank, f"frontier{rank:05d}", cores, gpus) for rank in range(nodes)]


def slots(nodes: int) -> list[list[tuple[float, tuple[NodeShare, ...]]]]:
    """Per shape, a heap of (free from, slot number, shares): the nodes are split between
    the shapes in proportion to the node-seconds their jobs need, so that all
    shapes finish at about the same time; slots are taken round-robin over
    the nodes (the earliest free first)."""
    heaps: list[list] = [[] for _ in SHAPES]
    need = [
        share * (low + high) / 2 * span * cores / CORES
        for share, _, (low, high), _, cores, _, span in SHAPES
    ]
    cut = 0
    for index, (_, _, _, per_node, cores, gpus, span) in enumerate(SHAPES):
        count = round(nodes * need[index] / sum(need))
        count = max(span, count) if index < len(SHAPES) - 1 else nodes - cut
        ranks = list(range(cut, min(nodes, cut + count)))
        cut += len(ranks)
        for slot in range(per_node):
            for first in range(0, len(ranks) - span + 1, span):
                shares = tuple(
                    NodeShare(
                        rank,
                        1,
                        tuple(range(slot * cores, (slot + 1) * cores)),
                        tuple(str(g) for g in range(slot * gpus, (slot + 1) * gpus)),
                    )
                    for rank in ranks[first : first + span]
                )
                heaps[index].append((0.0, len(heaps[index]), shares))
    return heaps


def write_journal(directory: Path, jobs: int, nodes: int, seed: int) -> Journal:
    """The whole run's journal through the plugin's writer; returns it (closed)."""
    rng = random.Random(seed)
    journal = Journal(directory)
    journal.run_started(directory.name, "flux", "backfill", Allocation(machine(nodes)))
    heaps = slots(nodes)
    base = time.time() - 30 * 86400  # every virtual time in the past
    events: list[tuple[float, int, str, dict]] = []
    key = 0
    for jobid in range(jobs):
        index = rng.choices(range(len(SHAPES)), [s[0] for s in SHAPES])[0]
        _, request, (low, high), *_ = SHAPES[index]
        rule = RULES[(index * 2 + jobid % 2) % len(RULES)]
        wildcards = {"T": str(300 + 50 * (jobid % 20)), "seed": str(jobid)}
        fate = rng.random()
        attempts = 2 if fate < 0.023 else 1
        for attempt in range(1, attempts + 1):
            key += 1
            record = {"rule": rule, "wildcards": wildcards, "jobid": str(jobid), "attempt": attempt}
            name = f"{rule}_T={wildcards['T']},seed={jobid}.{attempt}.log"
            log = f".snakemake/matensemble/{directory.name}/logs/{name}"
            journal.queued(key, record, request, log)
            free, slot, shares = heapq.heappop(heaps[index])
            start = free + rng.uniform(0.01, 0.2)
            runtime = rng.uniform(low, high)
            end = start + runtime
            heapq.heappush(heaps[index], (end, slot, shares))
            events.append((start, key, "started", {"shares": shares}))
            failed = attempt < attempts or 0.023 <= fate < 0.026
            if failed:
                events.append((end, key, "failed", {"exit_code": 1}))
            elif fate > 0.999:
                events.append((end, key, "cancelled", {}))
            else:
                events.append((end, key, "finished", {}))
    events.sort(key=lambda e: e[0])
    drain_at = events[len(events) // 3][0]
    for at, key, kind, extra in events:
        if kind == "started":
            journal.started(key, f"f{key:x}", Placement(extra["shares"]), base + at)
        elif kind == "finished":
            journal.ended(key, "finished", "success", end=base + at, exit_code=0)
        elif kind == "failed":
            journal.ended(
                key, "failed", "failed", end=base + at, exit_code=1, reason="exited with 1"
            )
        else:
            journal.ended(key, "cancelled", "cancelled", end=base + at, reason="cancelled")
        if at == drain_at:
            journal.resource_event("drain", [3, 4], "bad memory", at=base + at)
            journal.resource_event("undrain", [3, 4], at=base + at + 600)
    journal.close(plugin_cpu_s=1.0)
    return journal


# -- the steps, each in its own interpreter -------------------------------------------


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def step_write(directory: Path, jobs: int, nodes: int) -> dict:
    base = _peak_mb()
    started = time.process_time()
    journal = write_journal(directory, jobs, nodes, seed=20)
    return {
        "cpu_s": time.process_time() - started,
        "journal_cpu_s": journal.cpu_s,
        "bytes": journal.path.stat().st_size,
        "peak_mb": _peak_mb() - base,
    }


def step_summary(directory: Path, how: str = "observer") -> dict:
    """``observer``: the calls ``observer.run_ended`` makes today;
    ``lines``: ``summary_text.end_of_run_lines`` (the same lines, the journal read
    with the collector paused)."""
    from snakemake_executor_plugin_matensemble.observing import summary_text
    from snakemake_executor_plugin_matensemble.observing.journal import read_journal
    from snakemake_executor_plugin_matensemble.observing.summary import summarize
    from snakemake_executor_plugin_matensemble.observing.summary_text import (
        chain_lines,
        resource_lines,
        summary_lines,
    )

    path = directory / "journal.jsonl"
    base = _peak_mb()
    started, cpu = time.perf_counter(), time.process_time()
    if how == "lines":
        lines = summary_text.end_of_run_lines(path)
    else:
        lines = summary_lines(summarize(read_journal(path)))
        lines += resource_lines(path) + chain_lines(path)
    return {
        "s": time.perf_counter() - started,
        "cpu_s": time.process_time() - cpu,
        "lines": len(lines),
        "peak_mb": _peak_mb() - base,
    }


def step_report(directory: Path) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: F401  (imported before the baseline)

    from snakemake_executor_plugin_matensemble.observing import report

    base = _peak_mb()
    started, cpu = time.perf_counter(), time.process_time()
    out = report.make_report(directory / "journal.jsonl", directory / "report")
    return {
        "s": time.perf_counter() - started,
        "cpu_s": time.process_time() - cpu,
        "timeline_kb": (out / "timeline.png").stat().st_size / 1024,
        "peak_mb": _peak_mb() - base,
    }


def in_child(step: str, *args: object) -> dict:
    command = [sys.executable, __file__, "--step", step, *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(jobs: int, nodes: int, root: Path) -> dict:
    directory = root / f"run-{jobs}"
    figures = {"jobs": jobs}
    figures["write"] = in_child("write", directory, jobs, nodes)
    figures["summary"] = in_child("summary", directory, "observer")
    figures["lines"] = in_child("summary", directory, "lines")
    figures["report"] = in_child("report", directory)
    return figures


def per_job(figures: dict) -> dict[str, float]:
    jobs = figures["jobs"]
    w, s, r = figures["write"], figures["summary"], figures["report"]
    lines = figures["lines"]
    return {
        "journal bytes": w["bytes"] / jobs,
        "journal write CPU us": 1e6 * w["journal_cpu_s"] / jobs,
        "end of run (observer today) CPU us": 1e6 * s["cpu_s"] / jobs,
        "end_of_run_lines CPU us": 1e6 * lines["cpu_s"] / jobs,
        "end-of-run peak KB": 1024 * s["peak_mb"] / jobs,
        "matensemble-report CPU us": 1e6 * r["cpu_s"] / jobs,
        "report peak KB": 1024 * r["peak_mb"] / jobs,
    }


def show(figures: dict) -> None:
    w, s, r = figures["write"], figures["summary"], figures["report"]
    lines = figures["lines"]
    print(
        f"{figures['jobs']:,} jobs: journal {w['bytes'] / 2**20:.1f} MiB "
        f"(writer CPU {w['journal_cpu_s']:.2f} s); end of run {s['s']:.2f} s as the observer "
        f"calls it, {lines['s']:.2f} s by end_of_run_lines ({s['lines']} lines, peak "
        f"+{s['peak_mb']:.0f} MB); "
        f"matensemble-report {r['s']:.2f} s (peak +{r['peak_mb']:.0f} MB, "
        f"timeline.png {r['timeline_kb']:.0f} KiB)"
    )
    for name, value in per_job(figures).items():
        print(f"    {name:36s} {value:10.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--step", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        name, directory, *rest = args.step
        step = {"write": step_write, "summary": step_summary, "report": step_report}[name]
        args = [int(a) if a.isdigit() else a for a in rest]
        print(json.dumps(step(Path(directory), *args)))
        return
    with tempfile.TemporaryDirectory() as root:
        results = []
        for jobs in args.jobs:
            results.append(measure(jobs, args.nodes, Path(root)))
            show(results[-1])
        if len(results) > 1:
            small, big = per_job(results[0]), per_job(results[-1])
            print(f"per-job growth {results[0]['jobs']:,} -> {results[-1]['jobs']:,} jobs:")
            for name in small:
                ratio = big[name] / small[name] if small[name] else float("nan")
                print(f"    {name:36s} {ratio:6.2f}x")


if __name__ == "__main__":
    main()
