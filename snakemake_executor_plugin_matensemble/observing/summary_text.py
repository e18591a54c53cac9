"""The end-of-run text: the summary's figures as lines, the allocation's changes,
the earlier allocations of a run that went on over several.

The figures themselves are counted in :mod:`.summary`; here they are worded
for the Snakemake log (``matensemble: ...`` lines) and ``matensemble-report``.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from pathlib import Path

from ..cpulist import format_cpu_list
from .journal import JobRecord
from .summary import RunSummary, read_and_summarize

#: Journal events read apart from the jobs' (by :func:`side_events`).
SIDE_EVENTS = frozenset({"resource", "previous"})


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
    if summary.instances:
        lines.append(instances_line(summary))
    for job in summary.retried:
        lines.append(
            f"matensemble: retried: {job.label} attempt {job.attempt} ({job.status}"
            f"{where(job)}): {job.reason}. Log: {job.log}"
        )
    for job in summary.failures:
        attempt = f", attempt {job.attempt}" if job.attempt > 1 else ""
        lines.append(
            f"matensemble: failed: {job.label} ({job.status}{attempt}{where(job)}): "
            f"{job.reason}. Log: {job.log}"
        )
    return lines


def where(job: JobRecord) -> str:
    """``, in child c1`` for an attempt that ran in a child Flux instance."""
    return f", in child {job.instance}" if job.instance else ""


def instances_line(summary: RunSummary) -> str:
    """``matensemble: Flux instances: c0 4 jobs (0.0100 node-h), ...``: which
    child ran what (attempts that ran there, failed ones, busy node-hours)."""
    parts = []
    for stats in summary.instances:
        failed = f", {stats.failed} failed" if stats.failed else ""
        parts.append(f"{stats.instance} {stats.jobs} jobs{failed} ({stats.node_hours:.4f} node-h)")
    return "matensemble: Flux instances: " + "; ".join(parts) + "."


# -- several allocations and resource events ------------------------------------------


def side_events(path: str | Path, kinds: frozenset[str] = SIDE_EVENTS) -> Iterator[dict]:
    """The journal's events of these ``kinds`` (``resource``, ``previous``):
    a few lines among hundreds of thousands, so a line is parsed only if it
    names one of the kinds (a torn line is skipped, as by ``iter_events``).
    Raises :class:`OSError` if the file cannot be opened."""
    marks = tuple(f'"{kind}"' for kind in kinds)
    with open(path, encoding="utf-8") as stream:
        for line in stream:
            if not any(mark in line for mark in marks):
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict) and event.get("event") in kinds:
                yield event


def run_chain(path: str | Path, limit: int = 50) -> list[Path]:
    """The journals of a run that went on over several allocations, oldest
    first: ``path`` and the journals its ``previous`` lines point to."""
    chain = [Path(path)]
    while len(chain) < limit:
        previous = next(
            (e.get("journal") for e in side_events(chain[-1], frozenset({"previous"}))),
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
        record, summary = read_and_summarize(journal)
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
    for event in side_events(path, frozenset({"resource"})):
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


def end_of_run_lines(path: str | Path) -> list[str]:
    """What the end of a run tells the user about its journal at ``path``:
    the summary, the allocation's changes, the earlier allocations of the
    run (read once each, with :func:`gc_paused`)."""
    _, summary = read_and_summarize(path)
    return summary_lines(summary) + resource_lines(path) + chain_lines(path)
