"""Snakemake scheduler plugin ``matensemble``: hand every ready job over, in linear time.

``snakemake --executor matensemble --scheduler matensemble`` (Snakemake releases
with scheduler plugins). The executor packs jobs into the allocation itself, so
Snakemake's own job selection only has to keep within Snakemake's global limits
(``--jobs``, ``--resources``); with ``-j unlimited`` that means every ready job.
Snakemake's ``greedy`` selector does that in time quadratic in the ready jobs
(one pass over all of them per job selected) and ``ilp`` builds a MILP over all
of them, which on a 100,000-job ensemble costs hours before the first job runs.
This one sorts the ready jobs once, as Snakemake's greedy selector ranks them
(priority, then the bytes of temporary input they would free, then the bytes
of input; among equal ones, the first given first) and takes each job that
still fits: O(jobs x resources). Since every limit only shrinks, a job that does
not fit now never fits later in the same selection, so this picks exactly the
jobs greedy picks (one argmax over the fitting jobs per job selected), and
returns them in the order given, as greedy does.

It is not the default ``ilp`` selector: that one maximizes the cores in use
after priority, so where a big job and two small ones compete for a limit it
may start the two small ones where greedy (and this) start the big one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from snakemake_interface_common.io import AnnotatedStringInterface
from snakemake_interface_scheduler_plugins.base import SchedulerBase
from snakemake_interface_scheduler_plugins.interfaces.jobs import JobSchedulerInterface
from snakemake_interface_scheduler_plugins.settings import SchedulerSettingsBase

__all__ = ["Scheduler", "SchedulerSettings"]


@dataclass
class SchedulerSettings(SchedulerSettingsBase):
    """No settings: the executor's packing policy is where users choose."""


class Scheduler(SchedulerBase):
    """First fit over the ready jobs in Snakemake's greedy ranking."""

    def select_jobs(
        self,
        selectable_jobs: Sequence[JobSchedulerInterface],
        remaining_jobs: Sequence[JobSchedulerInterface],
        available_resources: Mapping[str, int | str],
        input_sizes: dict[AnnotatedStringInterface, int],
    ) -> Sequence[JobSchedulerInterface]:
        left = {name: value for name, value in available_resources.items() if _is_count(value)}
        # a stable sort: jobs of equal rank stay in the order given, and the first
        # of them is taken first, as greedy's argmax over its jobs takes the first
        ranked = sorted(selectable_jobs, key=lambda job: _rank(job, input_sizes), reverse=True)
        chosen: set[int] = set()
        for job in ranked:
            needs = _needs(job, left)
            if all(amount <= left[name] for name, amount in needs):
                for name, amount in needs:
                    left[name] -= amount
                chosen.add(id(job))
        # in the order given, as greedy returns them
        return [job for job in selectable_jobs if id(job) in chosen]


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _needs(job: JobSchedulerInterface, limits: Mapping[str, int]) -> list[tuple[str, int]]:
    """The job's share of each limited resource (a string resource limits nothing)."""
    resources = job.scheduler_resources
    return [
        (name, amount)
        for name in limits
        if _is_count(amount := resources.get(name, 0)) and amount > 0
    ]


def _rank(job: JobSchedulerInterface, input_sizes: Mapping) -> tuple[int, int, int]:
    """Snakemake's greedy reward: priority, temporary input bytes, input bytes."""
    inputs = list(getattr(job, "input", ()))
    temp = sum(input_sizes.get(f) or 0 for f in inputs if _is_temp(f))
    total = sum(input_sizes.get(f) or 0 for f in inputs)
    return (job.priority, temp, total)


def _is_temp(path: object) -> bool:
    flagged = getattr(path, "is_flagged", None)
    return bool(flagged and flagged("temp"))
