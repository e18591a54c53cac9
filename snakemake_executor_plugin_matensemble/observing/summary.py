"""Figures of a run: makespan, utilization, the best possible makespan, rules.

Jobs are counted as Snakemake counts them: one per Snakemake job, by the
outcome of its last attempt (a job that failed once and then succeeded on
retry is done, not failed); attempts are counted apart. Every time is epoch
seconds (the journal's clock) and every duration seconds.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .journal import JobRecord, RunRecord, read_journal
from .status import ENCLOSING


@dataclass(frozen=True)
class JobAttempts:
    """One Snakemake job and all its attempts (journal records), in order."""

    attempts: tuple[JobRecord, ...]

    @property
    def final(self) -> JobRecord:
        """The last attempt: its outcome is the job's."""
        return self.attempts[-1]

    @property
    def outcome(self) -> str:
        """``done``, ``failed``, ``cancelled`` (stopped while running),
        ``not_started`` (withdrawn before it started) or ``unfinished`` (still
        running where the journal ends)."""
        final = self.final
        if final.status == "success":
            return "done"
        if final.failed:
            return "failed"
        if not final.ran:
            return "not_started"
        return "cancelled" if final.status == "cancelled" else "unfinished"

    @property
    def retried(self) -> tuple[JobRecord, ...]:
        """The attempts before the last that ran (each was retried)."""
        return tuple(record for record in self.attempts[:-1] if record.ran)


def by_job(records: list[JobRecord]) -> list[JobAttempts]:
    """Group attempts by Snakemake job (its jobid), each job in order of its
    first journal key, its attempts in key order."""
    groups: dict[object, list[JobRecord]] = {}
    for record in sorted(records, key=lambda r: r.key):
        groups.setdefault(record.job, []).append(record)
    return [JobAttempts(tuple(attempts)) for attempts in groups.values()]


@dataclass(frozen=True)
class RuleStats:
    """Per rule: ``jobs`` Snakemake jobs that ran (an attempt started),
    ``attempts`` attempts that ran, their mean and longest runtime (seconds),
    the most cores and GPUs one attempt held, and ``failures``: jobs whose
    last attempt failed."""

    rule: str
    jobs: int
    attempts: int
    mean_s: float
    max_s: float
    cores: int
    gpus: int
    failures: int

    @property
    def count(self) -> int:
        """Same as :attr:`jobs` (the column's old name)."""
        return self.jobs


@dataclass(frozen=True)
class InstanceStats:
    """Per Flux instance of a run with child instances (``enclosing``: the
    instance the children run in): ``jobs`` attempts that ran there, of them
    ``failed`` ones, and ``node_hours`` the nodes they held times their
    runtime (busy node-hours)."""

    instance: str
    jobs: int
    failed: int
    node_hours: float


@dataclass(frozen=True)
class RunSummary:
    """Counts are Snakemake jobs by final outcome; ``attempts`` counts every
    attempt that ran. ``makespan_s`` and ``lower_bound_s`` are seconds."""

    done: int
    failed: int
    cancelled: int
    not_started: int
    makespan_s: float
    core_utilization: float
    gpu_utilization: float | None
    lower_bound_s: float
    rules: list[RuleStats]
    #: the last attempt of every job that failed for good
    failures: list[JobRecord]
    unfinished: int = 0
    attempts: int = 0
    #: failed attempts of jobs that were retried (whatever the retry's outcome)
    retried: tuple[JobRecord, ...] = ()
    #: per Flux instance, where the run used child instances (else empty)
    instances: tuple[InstanceStats, ...] = ()

    @property
    def bound_ratio(self) -> float:
        return self.makespan_s / self.lower_bound_s if self.lower_bound_s else float("nan")

    @property
    def jobs(self) -> int:
        return self.done + self.failed + self.cancelled + self.not_started + self.unfinished


def lower_bound(
    jobs: list[JobRecord], total_cores: int, until: float | None = None, total_gpus: int = 0
) -> float:
    """The best possible makespan, in seconds: the largest of total
    core-seconds / cores, total GPU-seconds / GPUs and the longest attempt. No
    schedule of these attempts on ``total_cores`` cores and ``total_gpus``
    GPUs can be shorter. ``until``: epoch seconds where attempts still
    running are cut off."""
    ran = [job for job in jobs if job.ran]
    if not ran or not total_cores:
        return 0.0
    core_seconds = sum(job.cores * job.duration(until) for job in ran)
    bounds = [core_seconds / total_cores, max(job.duration(until) for job in ran)]
    if total_gpus:
        bounds.append(sum(job.gpus * job.duration(until) for job in ran) / total_gpus)
    return max(bounds)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for a bulk load or count of a
    journal, then back as it was.

    Reading a 100,000-job journal makes millions of small objects that all
    live on, and every full collection walks all of them again: with the
    collector on, reading and summarizing cost twice as much per job at
    100,000 jobs as at 10,000 (``benchmarks/journal_scale.py``). Nothing made
    here forms a cycle, so nothing waits for the collector; other threads
    are only spared its pauses for as long.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def read_and_summarize(path: str | Path) -> tuple[RunRecord, RunSummary]:
    """The journal at ``path`` and its figures (with :func:`gc_paused`).
    Raises :class:`OSError` if it cannot be read."""
    with gc_paused():
        record = read_journal(path)
        return record, summarize(record)


def summarize(record: RunRecord) -> RunSummary:
    """The figures of one journal (a finished or a killed run).

    One pass over the attempts (grouped once by Snakemake job); cost linear
    in the attempts, apart from sorting them by key.
    """
    with gc_paused():
        return _summarize(record)


def _summarize(record: RunRecord) -> RunSummary:
    until = record.last_time
    tally = _Tally(until)
    for job in by_job(record.jobs):
        tally.add(job)
    cores, gpus = record.total_cores, record.total_gpus
    makespan = max(0.0, tally.last - tally.first) if tally.attempts else 0.0
    if tally.attempts and cores:
        bounds = [tally.core_s / cores, tally.longest]
        lower = max([*bounds, tally.gpu_s / gpus] if gpus else bounds)
    else:
        lower = 0.0
    return RunSummary(
        done=tally.outcomes["done"],
        failed=tally.outcomes["failed"],
        cancelled=tally.outcomes["cancelled"],
        not_started=tally.outcomes["not_started"],
        unfinished=tally.outcomes["unfinished"],
        attempts=tally.attempts,
        makespan_s=makespan,
        core_utilization=tally.core_s / (cores * makespan) if cores and makespan else 0.0,
        gpu_utilization=tally.gpu_s / (gpus * makespan) if gpus and makespan else None,
        lower_bound_s=lower,
        rules=tally.rule_stats(),
        failures=tally.failures,
        retried=tuple(tally.retried),
        instances=tally.instance_stats(),
    )


class _RuleTally:
    """Running figures of one rule (see :class:`RuleStats`)."""

    __slots__ = ("attempts", "cores", "failures", "gpus", "jobs", "max_s", "total_s")

    def __init__(self) -> None:
        self.jobs = self.attempts = self.cores = self.gpus = self.failures = 0
        self.total_s = self.max_s = 0.0


class _Tally:
    """Every figure of :class:`RunSummary`, counted in one pass over the jobs
    (each attempt's cores, GPUs and runtime worked out once)."""

    def __init__(self, until: float) -> None:
        self.until = until
        self.outcomes = dict.fromkeys(
            ("done", "failed", "cancelled", "not_started", "unfinished"), 0
        )
        self.attempts = 0
        self.first, self.last = float("inf"), float("-inf")
        self.core_s = self.gpu_s = self.longest = 0.0
        self.rules: dict[str, _RuleTally] = {}
        self.failures: list[JobRecord] = []
        self.retried: list[JobRecord] = []
        #: instance name -> [attempts, failed attempts, node-seconds]
        self.instances: dict[str, list[float]] = {}

    def add(self, job: JobAttempts) -> None:
        outcome = job.outcome
        self.outcomes[outcome] += 1
        if outcome == "failed":
            self.failures.append(job.final)
        rule = None
        for number, attempt in enumerate(job.attempts, 1):
            if not attempt.ran:
                continue
            if number < len(job.attempts) and attempt.failed:
                self.retried.append(attempt)
            if rule is None:
                rule = self.rules.setdefault(job.final.rule, _RuleTally())
                rule.jobs += 1
                rule.failures += outcome == "failed"
            self._attempt(attempt, rule)

    def _attempt(self, attempt: JobRecord, rule: _RuleTally) -> None:
        cores, gpus, runtime = attempt.cores, attempt.gpus, attempt.duration(self.until)
        end = attempt.end if attempt.end is not None else self.until
        self.attempts += 1
        self.first, self.last = min(self.first, attempt.start), max(self.last, end)
        self.core_s += cores * runtime
        self.gpu_s += gpus * runtime
        self.longest = max(self.longest, runtime)
        rule.attempts += 1
        rule.total_s += runtime
        rule.max_s = max(rule.max_s, runtime)
        rule.cores, rule.gpus = max(rule.cores, cores), max(rule.gpus, gpus)
        where = self.instances.setdefault(attempt.instance or ENCLOSING, [0, 0, 0.0])
        where[0] += 1
        where[1] += attempt.failed
        where[2] += len(attempt.placement) * runtime

    def instance_stats(self) -> tuple[InstanceStats, ...]:
        """Per instance, children by name then ``enclosing``; none when every
        attempt ran in the enclosing (or only) instance."""
        if set(self.instances) <= {ENCLOSING}:
            return ()
        return tuple(
            InstanceStats(name, int(jobs), int(failed), node_s / 3600.0)
            for name, (jobs, failed, node_s) in sorted(
                self.instances.items(), key=lambda item: (item[0] == ENCLOSING, item[0])
            )
        )

    def rule_stats(self) -> list[RuleStats]:
        """Busiest rule (attempts x mean runtime) first."""
        stats = [
            RuleStats(
                rule=name,
                jobs=t.jobs,
                attempts=t.attempts,
                mean_s=t.total_s / t.attempts,
                max_s=t.max_s,
                cores=t.cores,
                gpus=t.gpus,
                failures=t.failures,
            )
            for name, t in self.rules.items()
        ]
        return sorted(stats, key=lambda s: s.mean_s * s.attempts, reverse=True)


def rule_stats(jobs: list[JobRecord], until: float | None = None) -> list[RuleStats]:
    """Per-rule figures over the jobs that ran (never-started ones are left
    out), busiest rule (attempts x mean runtime) first."""
    tally = _Tally(until)
    for job in by_job(jobs):
        tally.add(job)
    return tally.rule_stats()
