"""What one job asks of the allocation: the request the packer places.

Made and checked from a job's Snakemake resources by :mod:`..intake.request`;
read by the packer, the allocation, the backends and the journal.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ResourceRequest:
    """What one job asks of the allocation."""

    tasks: int = 1
    cores_per_task: int = 1
    gpus_per_task: int = 0
    nodes: int | None = None
    exclusive: bool = False
    walltime_s: int | None = None
    mpi: str | None = None
    #: Which Snakemake field the cores came from (for error messages).
    cores_field: str = "threads"
    #: Which Snakemake field the GPUs came from (for error messages).
    gpus_field: str = "gpu"

    @property
    def total_cores(self) -> int:
        return self.tasks * self.cores_per_task

    @property
    def total_gpus(self) -> int:
        return self.tasks * self.gpus_per_task

    @property
    def shape(self) -> tuple[int, int, int, int | None, bool]:
        """Everything that decides where the request can be placed."""
        return (
            self.tasks,
            self.cores_per_task,
            self.gpus_per_task,
            self.nodes,
            self.exclusive,
        )

    def describe(self) -> str:
        parts = [f"{self.tasks} task(s) x {self.cores_per_task} core(s)"]
        if self.gpus_per_task:
            parts.append(f"{self.gpus_per_task} GPU(s) per task")
        if self.nodes:
            parts.append(f"on {self.nodes} node(s)")
        if self.exclusive:
            parts.append("exclusive")
        if self.walltime_s is not None:
            parts.append(f"walltime {self.walltime_s} s")
        return ", ".join(parts)
