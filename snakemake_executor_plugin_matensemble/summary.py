"""Figures of a run: makespan, utilization, the best possible makespan, rules.

Jobs are counted as Snakemake counts them: one per Snakemake job, by the
outcome of its last attempt (a job that failed once and then succeeded on
retry is done, not failed); attempts are counted apart. Every time is epoch
seconds (the journal's clock) and every duration seconds.
"""

from __future__ import annotations

import datetime
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from .cpulist import format_cpu_list
from .journal import JobRecord, RunRecord, iter_events, read_journal


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


def summarize(record: RunRecord) -> RunSummary:
    """The figures of one journal (a finished or a killed run)."""
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
    jobs = by_job(record.jobs)
    outcomes = [job.outcome for job in jobs]
    return RunSummary(
        done=outcomes.count("done"),
        failed=outcomes.count("failed"),
        cancelled=outcomes.count("cancelled"),
        not_started=outcomes.count("not_started"),
        unfinished=outcomes.count("unfinished"),
        attempts=len(ran),
        makespan_s=makespan,
        core_utilization=core_busy / (cores * makespan) if cores and makespan else 0.0,
        gpu_utilization=gpu_busy / (gpus * makespan) if gpus and makespan else None,
        lower_bound_s=lower_bound(record.jobs, cores, until, gpus),
        rules=rule_stats(record.jobs, until),
        failures=[job.final for job in jobs if job.outcome == "failed"],
        retried=tuple(attempt for job in jobs for attempt in job.retried if attempt.failed),
    )


def rule_stats(jobs: list[JobRecord], until: float | None = None) -> list[RuleStats]:
    """Per-rule figures over the jobs that ran (never-started ones are left
    out), busiest rule (attempts x mean runtime) first."""
    by_rule: dict[str, list[JobAttempts]] = defaultdict(list)
    for job in by_job(jobs):
        if any(attempt.ran for attempt in job.attempts):
            by_rule[job.final.rule].append(job)
    stats = []
    for rule, members in by_rule.items():
        ran = [attempt for job in members for attempt in job.attempts if attempt.ran]
        durations = [attempt.duration(until) for attempt in ran]
        stats.append(
            RuleStats(
                rule=rule,
                jobs=len(members),
                attempts=len(ran),
                mean_s=sum(durations) / len(durations),
                max_s=max(durations),
                cores=max(attempt.cores for attempt in ran),
                gpus=max(attempt.gpus for attempt in ran),
                failures=sum(job.outcome == "failed" for job in members),
            )
        )
    return sorted(stats, key=lambda s: s.mean_s * s.attempts, reverse=True)


def count_line(summary: RunSummary) -> str:
    """``matensemble: 9 job(s) done, 1 failed, ...`` (Snakemake jobs by final
    outcome), with the attempts when some job was retried."""
    line = (
        f"matensemble: {summary.done} job(s) done, {summary.failed} failed, "
        f"{summary.cancelled} cancelled, {summary.not_started} not started"
    )
    if summary.unfinished:
        line += f", {summary.unfinished} still running when the journal ends"
    if summary.retried:
        line += f" ({summary.attempts} attempts; {len(summary.retried)} failed and were retried)"
    return line + "."


def summary_lines(summary: RunSummary, slowest: int = 3) -> list[str]:
    """The end-of-run summary for the Snakemake log."""
    lines = [count_line(summary)]
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
    for job in summary.retried:
        lines.append(
            f"matensemble: retried: {job.label} attempt {job.attempt} ({job.status}): "
            f"{job.reason}. Log: {job.log}"
        )
    for job in summary.failures:
        attempt = f", attempt {job.attempt}" if job.attempt > 1 else ""
        lines.append(
            f"matensemble: failed: {job.label} ({job.status}{attempt}): {job.reason}. "
            f"Log: {job.log}"
        )
    return lines


# -- several allocations and resource events ------------------------------------------


def run_chain(path: str | Path, limit: int = 50) -> list[Path]:
    """The journals of a run that went on over several allocations, oldest
    first: ``path`` and the journals its ``previous`` lines point to."""
    chain = [Path(path)]
    while len(chain) < limit:
        previous = next(
            (e.get("journal") for e in iter_events(chain[-1]) if e.get("event") == "previous"),
            None,
        )
        if not previous or not Path(previous).exists() or Path(previous) in chain:
            break
        chain.append(Path(previous))
    return chain[::-1]


def chain_lines(path: str | Path) -> list[str]:
    """One line per allocation of a run that went on over several, oldest first
    (nothing for a run in one allocation)."""
    chain = run_chain(path)
    if len(chain) < 2:
        return []
    lines = [f"matensemble: this run went on over {len(chain)} allocations:"]
    for number, journal in enumerate(chain, 1):
        record = read_journal(journal)
        summary = summarize(record)
        lines.append(
            f"matensemble:   {number}. run {record.run.get('run', journal.parent.name)}: "
            f"{summary.done} done, {summary.failed} failed, {summary.not_started} not "
            f"started, makespan {summary.makespan_s:.1f} s ({journal})"
        )
    return lines


def resource_lines(path: str | Path) -> list[str]:
    """The allocation's changes during the run (drained, undrained, lost and
    returning ranks, a new end), one line each, at local wall-clock time
    (``at``/``t`` are epoch seconds)."""
    lines = []
    for event in iter_events(path):
        if event.get("event") != "resource":
            continue
        at = event.get("at") or event.get("t", 0.0)
        when = datetime.datetime.fromtimestamp(at).strftime("%H:%M:%S")
        ids = event.get("ranks", [])
        ranks = f"{'ranks' if len(ids) > 1 else 'rank'} {format_cpu_list(ids)}"
        what = {
            "drain": f"{ranks} drained",
            "undrain": f"{ranks} undrained",
            "down": f"{ranks} went down",
            "up": f"{ranks} came back",
            "expiration": "the allocation's end moved",
        }.get(event.get("kind"), f"{event.get('kind')} {ranks}")
        reason = f" ({event['reason']})" if event.get("reason") else ""
        lines.append(f"matensemble: {when} {what}{reason}.")
    return lines
