"""The command line a backend runs for one Snakemake job.

Every job runs through Snakemake's standard remote job command
(``python -m snakemake --target-jobs ... --mode remote``), restricted to the
cores the packer gave it (``--cores N`` instead of Snakemake's default ``all``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class JobCommand:
    """A shell command line and the shell that runs it."""

    command: str
    shell: str = "/bin/sh"
    #: Which path built it: "snakemake" (per-job Snakemake process).
    path: str = "snakemake"


class CommandBuilder:
    """Builds :class:`JobCommand` objects; runs in Snakemake's scheduler thread."""

    def __init__(self, executor: Any):
        self.executor = executor

    def build(self, job: Any, cores: int) -> JobCommand:
        with self.executor.cores_for_job(cores):
            return JobCommand(self.executor.format_job_exec(job))
