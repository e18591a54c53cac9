"""One picture and one summary for a run that went on over several allocations
(a campaign's, or resumed by hand): every allocation on one time axis, with the
gaps between them; totals and one line per allocation. Read from the journals
only (the run chain: :func:`..summary.run_chain`). Times are epoch seconds."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

from ..observing.journal import RunRecord
from ..observing.summary import RunSummary, by_job, read_and_summarize
from ..observing.summary_text import run_chain


@dataclass(frozen=True)
class AllocationSpan:
    """One allocation of the chain: its run, when it began and ended (the
    journal's first and last times), its figures."""

    number: int
    record: RunRecord
    summary: RunSummary
    begin: float
    end: float

    @property
    def length_s(self) -> float:
        return max(0.0, self.end - self.begin)


def allocation_spans(journal: str | Path) -> list[AllocationSpan]:
    """The allocations of the run whose (newest) journal is ``journal``, oldest first."""
    spans = []
    for number, path in enumerate(run_chain(journal), 1):
        record, summary = read_and_summarize(path)
        begin = float(record.run.get("t", 0.0)) or min(
            (job.queued for job in record.jobs if job.queued is not None), default=0.0
        )
        spans.append(AllocationSpan(number, record, summary, begin, record.last_time))
    return spans


def gaps_s(spans: list[AllocationSpan]) -> list[float]:
    """Seconds between one allocation's end and the next one's start."""
    return [max(0.0, b.begin - a.end) for a, b in itertools.pairwise(spans)]


def chain_summary_lines(spans: list[AllocationSpan]) -> list[str]:
    """Totals over the allocations (each Snakemake job counted once, by its
    last attempt in the newest allocation that ran it), then one line each."""
    if len(spans) < 2:
        return []
    final: dict[object, str] = {}
    for span in spans:
        for job in by_job(span.record.jobs):
            final[(job.final.rule, tuple(sorted(job.final.wildcards.items())))] = job.outcome
    done = sum(outcome == "done" for outcome in final.values())
    failed = sum(outcome == "failed" for outcome in final.values())
    busy = sum(span.length_s for span in spans)
    waited = sum(gaps_s(spans))
    wall = spans[-1].end - spans[0].begin
    lines = [
        f"matensemble: {len(spans)} allocations: {done} job(s) done, {failed} failed over "
        f"{wall / 60:.1f} min ({busy / 60:.1f} min in allocations, {waited / 60:.1f} min "
        "between them)."
    ]
    gaps = [*gaps_s(spans), None]
    for span, gap in zip(spans, gaps, strict=True):
        s = span.summary
        after = f"; {gap:.0f} s until the next" if gap is not None else ""
        lines.append(
            f"matensemble:   allocation {span.number} ({span.record.run.get('run', '?')}): "
            f"{span.length_s:.0f} s, {s.done} done, {s.failed} failed, {s.not_started} not "
            f"started, cores {100 * s.core_utilization:.0f}% busy{after}"
        )
    return lines


def chain_figure(spans: list[AllocationSpan]):
    """Every allocation on one time axis (minutes since the first began): a
    band per allocation, its attempts inside (one row per core slot), the gaps
    labelled. The caller closes the figure."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    origin = spans[0].begin
    fig, ax = plt.subplots(figsize=(12, 1.2 + 0.8 * len(spans)))
    colors: dict[str, tuple] = {}
    cmap = plt.get_cmap("tab20")
    for row, span in enumerate(spans):
        y = len(spans) - 1 - row
        start, width = (span.begin - origin) / 60, span.length_s / 60
        ax.add_patch(Rectangle((start, y), width, 0.9, color="0.9", zorder=0))
        ran = sorted((job for job in span.record.jobs if job.ran), key=lambda j: j.start)
        slots = max(1, span.record.total_cores)
        for index, job in enumerate(ran):
            end = job.end if job.end is not None else span.end
            color = colors.setdefault(job.rule, cmap(len(colors) % 20))
            lane = (index % slots) / slots
            ax.add_patch(
                Rectangle(
                    ((job.start - origin) / 60, y + 0.05 + 0.8 * lane),
                    (end - job.start) / 60,
                    0.8 / slots,
                    facecolor=color,
                    edgecolor="red" if job.failed else "black",
                    linewidth=0.3,
                )
            )
    for row, (a, gap) in enumerate(zip(spans, gaps_s(spans), strict=False)):
        y = len(spans) - 1 - row
        ax.annotate(
            f"gap {gap:.0f} s",
            ((a.end - origin) / 60, y - 0.05),
            fontsize=8,
            ha="left",
            va="top",
        )
    ax.set_xlim(0, (spans[-1].end - origin) / 60 * 1.02 or 1)
    ax.set_ylim(-0.2, len(spans))
    ax.set_yticks([len(spans) - 1 - r + 0.45 for r in range(len(spans))])
    ax.set_yticklabels([f"allocation {s.number}" for s in spans])
    ax.set_xlabel("minutes since the first allocation began")
    ax.set_title(f"{len(spans)} allocations of one run")
    handles = [Rectangle((0, 0), 1, 1, color=c) for c in colors.values()]
    if handles:
        ax.legend(handles, list(colors), loc="upper right", fontsize=8)
    fig.tight_layout()
    return fig


def draw_chain(journal: str | Path, path: Path) -> list[str]:
    """Write the picture of every allocation of ``journal``'s run to ``path``
    (PNG) when there are several; the summary lines (none for one allocation)."""
    spans = allocation_spans(journal)
    if len(spans) < 2:
        return []
    import matplotlib.pyplot as plt

    fig = chain_figure(spans)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return chain_summary_lines(spans)
