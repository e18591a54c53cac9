"""Figures of a run: makespan, utilization, the best possible makespan, rules."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from .journal import JobRecord, RunRecord

#: Job statuses that count as failures.
FAILED = frozenset({"failed", "timeout", "launch_error"})


@dataclass(frozen=True)
class RuleStats:
    rule: str
    count: int
    mean_s: float
    max_s: float
    cores: int
    gpus: int
    failures: int


@dataclass(frozen=True)
class RunSummary:
    done: int
    failed: int
    cancelled: int
    not_started: int
    makespan_s: float
    core_utilization: float
    gpu_utilization: float | None
    lower_bound_s: float
    rules: list[RuleStats]
    failures: list[JobRecord]

    @property
    def bound_ratio(self) -> float:
        return self.makespan_s / self.lower_bound_s if self.lower_bound_s else float("nan")


def lower_bound(jobs: list[JobRecord], total_cores: int, until: float | None = None) -> float:
    """max(total core-seconds / cores, longest job): no schedule can be shorter."""
    ran = [job for job in jobs if job.ran]
    if not ran or not total_cores:
        return 0.0
    core_seconds = sum(job.cores * job.duration(until) for job in ran)
    return max(core_seconds / total_cores, max(job.duration(until) for job in ran))


def summarize(record: RunRecord) -> RunSummary:
    until = record.last_time
    ran = [job for job in record.jobs if job.ran]
    if ran:
        first = min(job.start for job in ran)
        last = max(job.end if job.end is not None else until for job in ran)
        makespan = max(0.0, last - first)
    else:
        makespan = 0.0
    cores, gpus = record.total_cores, record.total_gpus
    core_busy = sum(job.cores * job.duration(until) for job in ran)
    gpu_busy = sum(job.gpus * job.duration(until) for job in ran)
    statuses = [job.status for job in record.jobs]
    return RunSummary(
        done=statuses.count("success"),
        failed=sum(s in FAILED for s in statuses),
        cancelled=sum(job.status == "cancelled" and job.ran for job in record.jobs),
        not_started=sum(not job.ran for job in record.jobs),
        makespan_s=makespan,
        core_utilization=core_busy / (cores * makespan) if cores and makespan else 0.0,
        gpu_utilization=gpu_busy / (gpus * makespan) if gpus and makespan else None,
        lower_bound_s=lower_bound(record.jobs, cores, until),
        rules=rule_stats(record.jobs, until),
        failures=[job for job in record.jobs if job.status in FAILED],
    )


def rule_stats(jobs: list[JobRecord], until: float | None = None) -> list[RuleStats]:
    by_rule: dict[str, list[JobRecord]] = defaultdict(list)
    for job in jobs:
        by_rule[job.rule].append(job)
    stats = []
    for rule, members in by_rule.items():
        ran = [job for job in members if job.ran]
        durations = [job.duration(until) for job in ran]
        stats.append(
            RuleStats(
                rule=rule,
                count=len(members),
                mean_s=sum(durations) / len(durations) if durations else 0.0,
                max_s=max(durations, default=0.0),
                cores=max((job.cores for job in ran), default=0),
                gpus=max((job.gpus for job in ran), default=0),
                failures=sum(job.status in FAILED for job in members),
            )
        )
    return sorted(stats, key=lambda s: s.mean_s * s.count, reverse=True)


def summary_lines(summary: RunSummary, slowest: int = 3) -> list[str]:
    """The end-of-run summary for the Snakemake log."""
    lines = [
        f"matensemble: {summary.done} job(s) done, {summary.failed} failed, "
        f"{summary.cancelled} cancelled, {summary.not_started} not started.",
    ]
    if summary.makespan_s:
        gpu = (
            f", GPUs {100 * summary.gpu_utilization:.0f}%"
            if summary.gpu_utilization is not None
            else ""
        )
        lines.append(
            f"matensemble: makespan {summary.makespan_s:.1f} s; utilization: cores "
            f"{100 * summary.core_utilization:.0f}%{gpu}; best possible "
            f"{summary.lower_bound_s:.1f} s (makespan / bound = {summary.bound_ratio:.2f})."
        )
    top = sorted(summary.rules, key=lambda s: s.mean_s, reverse=True)[:slowest]
    if top:
        lines.append(
            "matensemble: slowest rules: "
            + ", ".join(f"{s.rule} (mean {s.mean_s:.1f} s, max {s.max_s:.1f} s)" for s in top)
            + "."
        )
    for job in summary.failures:
        lines.append(
            f"matensemble: failed: {job.label} ({job.status}): {job.reason}. Log: {job.log}"
        )
    return lines
