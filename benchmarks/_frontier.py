"""The machine and the job mix the full-machine benchmarks share (Frontier's
nodes, a seeded mix of ensemble jobs), for ``full_machine.py`` and its
real-Flux mode ``_flux_fake.py``."""

from __future__ import annotations

import random
from dataclasses import asdict

from snakemake_executor_plugin_matensemble.packing.allocation import NodeSpec
from snakemake_executor_plugin_matensemble.packing.resource_request import ResourceRequest

CORES, GPUS = 56, 8

#: (share of the jobs, request, runtime range in seconds, Snakemake priority
#: with --big-first)
MIX = (
    (0.40, ResourceRequest(), (300, 900), 0),
    (0.40, ResourceRequest(cores_per_task=7, gpus_per_task=1), (300, 900), 0),
    (0.10, ResourceRequest(exclusive=True), (600, 1200), 1),
    (0.10, ResourceRequest(tasks=16, cores_per_task=7, gpus_per_task=1, nodes=2), (600, 1200), 1),
)


def machine(nodes: int) -> list[NodeSpec]:
    cores = tuple(range(CORES))
    gpus = tuple(str(g) for g in range(GPUS))
    return [NodeSpec(rank, f"frontier{rank:05d}", cores, gpus) for rank in range(nodes)]


def workload(jobs: int, seed: int) -> list[tuple[ResourceRequest, int, int]]:
    """``jobs`` (request, runtime s, priority) triples, the shapes of :data:`MIX`
    interleaved; each request's walltime is its runtime."""
    rng = random.Random(seed)
    weights = [entry[0] for entry in MIX]
    chosen = rng.choices(range(len(MIX)), weights, k=jobs)
    out = []
    for index in chosen:
        _, request, (low, high), priority = MIX[index]
        runtime = rng.randint(low, high)
        request = ResourceRequest(**{**asdict(request), "walltime_s": runtime})
        out.append((request, runtime, priority))
    return out


def work(jobs: list[tuple[ResourceRequest, int, int]]) -> tuple[float, float, int]:
    """Core-seconds and GPU-seconds the jobs hold (an exclusive job: whole
    nodes), and the longest runtime."""
    core_s = gpu_s = 0.0
    for request, runtime, _ in jobs:
        if request.exclusive:
            core_s += (request.nodes or 1) * CORES * runtime
            gpu_s += (request.nodes or 1) * GPUS * runtime
        else:
            core_s += request.total_cores * runtime
            gpu_s += request.total_gpus * runtime
    return core_s, gpu_s, max(runtime for _, runtime, _ in jobs)
