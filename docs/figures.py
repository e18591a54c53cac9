"""Pictures for the docs, drawn from the packer itself (no processes run)."""

from __future__ import annotations

import random
from pathlib import Path

from snakemake_executor_plugin_matensemble.packing.allocation import Allocation
from snakemake_executor_plugin_matensemble.packing.nodes import NodeSpec
from snakemake_executor_plugin_matensemble.packing.packer import Packer
from snakemake_executor_plugin_matensemble.packing.policies import BackfillPolicy, FifoPolicy
from snakemake_executor_plugin_matensemble.packing.queue import JobTicket
from snakemake_executor_plugin_matensemble.packing.resource_request import ResourceRequest


class _Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def simulate(policy, jobs, nodes=2, cores=4):
    """Run ``jobs`` [(cores, seconds)] through the packer on a simulated clock."""
    clock = _Clock()
    specs = [NodeSpec(r, f"n{r}", tuple(range(cores))) for r in range(nodes)]
    packer = Packer(Allocation(specs), policy, clock)
    tickets = [
        JobTicket(i, ResourceRequest(cores_per_task=c, walltime_s=s), payload=(i, s))
        for i, (c, s) in enumerate(jobs)
    ]
    packer.enqueue(tickets)
    done = []
    while packer.queue or packer.running:
        packer.admit()
        ending = min(packer.running.values(), key=lambda t: t.started_at + t.payload[1])
        clock.now = ending.started_at + ending.payload[1]
        for ticket in list(packer.running.values()):
            if ticket.started_at + ticket.payload[1] <= clock.now:
                packer.finish(ticket)
                done.append(ticket)
    return done


def draw_policies(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = random.Random(3)
    jobs = [(rng.choice([1, 1, 2, 3, 4]), rng.randint(2, 9)) for _ in range(18)]
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.6), sharey=True)
    colors = plt.colormaps["tab20"]
    for ax, (title, policy) in zip(
        axes,
        [("backfill (default)", BackfillPolicy(reserve_after=60)), ("fifo", FifoPolicy())],
        strict=True,
    ):
        done = simulate(policy, jobs)
        span = max(t.started_at + t.payload[1] for t in done)
        for ticket in done:
            for share in ticket.placement.shares:
                for core in share.cores:
                    lane = share.rank * 4 + core
                    ax.barh(
                        lane,
                        ticket.payload[1],
                        left=ticket.started_at,
                        height=0.8,
                        color=colors(ticket.key % 20),
                        edgecolor="black",
                        linewidth=0.4,
                    )
                    ax.text(
                        ticket.started_at + ticket.payload[1] / 2,
                        lane,
                        str(ticket.key),
                        ha="center",
                        va="center",
                        fontsize=6,
                    )
        ax.set_title(f"{title}: makespan {span:.0f} s")
        ax.set_xlabel("time (s)")
    axes[0].set_yticks(range(8), [f"node {lane // 4} core {lane % 4}" for lane in range(8)])
    axes[0].invert_yaxis()
    fig.suptitle("The same 18 jobs (1-4 cores) on 2 nodes x 4 cores; numbers are queue order")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
