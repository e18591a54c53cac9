"""``matensemble-report``: pictures and tables of a run from its journal.

    matensemble-report .snakemake/matensemble            # newest run
    matensemble-report path/to/journal.jsonl -o report/   # a journal copied off a cluster

Writes ``timeline.png`` and ``utilization.png`` (drawn by :mod:`.timeline`),
``rules.csv``/``rules.md`` (per rule, over the jobs that ran: jobs, attempts,
mean/max runtime, cores, GPUs, failed jobs), for a run with child Flux
instances ``instances.csv``/``instances.md`` (which child ran what: attempts,
failed attempts, busy node-hours per instance; the retried and failed jobs
name their child), and ``report.html`` (all of it in one self-contained page).
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import sys
from collections.abc import Sequence
from pathlib import Path

from .journal import RunRecord, journal_paths
from .summary import RunSummary, read_and_summarize
from .summary_text import summary_lines, where
from .timeline import draw_timeline, draw_utilization


def find_journal(path: str | Path) -> Path:
    """A journal file, a run directory, or a directory of runs (the newest by
    run id is used, as everywhere: :func:`~.journal.journal_paths`). Raises
    :class:`FileNotFoundError` if there is none."""
    path = Path(path)
    if path.is_file():
        return path
    if (path / "journal.jsonl").is_file():
        return path / "journal.jsonl"
    runs = journal_paths(path)
    if not runs:
        raise FileNotFoundError(f"no journal.jsonl in {path} or its run directories")
    return runs[-1]


#: Per rule: Snakemake jobs that ran, their attempts that ran, mean and longest
#: runtime of an attempt (seconds), most cores and GPUs of an attempt, jobs
#: whose last attempt failed.
RULE_COLUMNS = ["rule", "jobs", "attempts", "mean_s", "max_s", "cores", "gpus", "failures"]


def rule_rows(summary: RunSummary) -> list[list[str]]:
    return [
        [
            s.rule,
            str(s.jobs),
            str(s.attempts),
            f"{s.mean_s:.2f}",
            f"{s.max_s:.2f}",
            str(s.cores),
            str(s.gpus),
            str(s.failures),
        ]
        for s in summary.rules
    ]


#: Per Flux instance of a run with children: attempts that ran there, failed
#: attempts, busy node-hours (nodes held x runtime).
INSTANCE_COLUMNS = ["instance", "jobs", "failed", "node_hours"]


def instance_rows(summary: RunSummary) -> list[list[str]]:
    return [
        [s.instance, str(s.jobs), str(s.failed), f"{s.node_hours:.4f}"] for s in summary.instances
    ]


def write_tables(summary: RunSummary, outdir: Path) -> None:
    _write_table(outdir, "rules", RULE_COLUMNS, rule_rows(summary))
    if summary.instances:
        _write_table(outdir, "instances", INSTANCE_COLUMNS, instance_rows(summary))


def _write_table(outdir: Path, name: str, columns: list[str], rows: list[list[str]]) -> None:
    """``<name>.csv`` and ``<name>.md``."""
    with open(outdir / f"{name}.csv", "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(columns)
        writer.writerows(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    (outdir / f"{name}.md").write_text("\n".join(lines) + "\n")


def _html_table(columns: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{path.stem}" src="data:image/png;base64,{data}" style="max-width:100%">'


def write_html(record: RunRecord, summary: RunSummary, outdir: Path) -> None:
    retried = {id(job) for job in summary.retried}
    failures = "".join(
        f"<li><b>{html.escape(job.label)}</b> ({html.escape(job.status)}, "
        f"attempt {job.attempt}{html.escape(where(job))}): {html.escape(job.reason)} &mdash; log "
        f"<code>{html.escape(job.log)}</code>{' (retried)' if id(job) in retried else ''}"
        "</li>"
        for job in (*summary.retried, *summary.failures)
    )
    figures = "".join(
        f"<li>{html.escape(line.removeprefix('matensemble: '))}</li>"
        for line in summary_lines(summary)
    )
    run = html.escape(str(record.run.get("run", "")))
    backend = html.escape(str(record.run.get("backend", "?")))
    policy = html.escape(str(record.run.get("policy", "?")))
    nodes = len(record.run.get("nodes", []))
    instances = (
        f"<h2>Flux instances</h2>{_html_table(INSTANCE_COLUMNS, instance_rows(summary))}\n"
        if summary.instances
        else ""
    )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>matensemble run {run}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #bbb;padding:3px 8px;text-align:right}}
td:first-child{{text-align:left}}</style>
</head><body>
<h1>matensemble run {run}</h1>
<p>backend {backend}, policy {policy}, {nodes} node(s), {record.total_cores} cores,
{record.total_gpus} GPUs</p>
<ul>{figures}</ul>
<h2>Timeline</h2>{_img(outdir / "timeline.png")}
<h2>Utilization</h2>{_img(outdir / "utilization.png")}
<h2>Rules</h2>{_html_table(RULE_COLUMNS, rule_rows(summary))}
{instances}<h2>Failures</h2><ul>{failures or "<li>none</li>"}</ul>
</body></html>
"""
    (outdir / "report.html").write_text(page)


def make_report(journal: str | Path, outdir: str | Path | None = None) -> Path:
    """Write every picture and table for ``journal``; returns the output directory
    (default ``<run>/report``). Raises :class:`FileNotFoundError` (no journal)
    or :class:`OSError` (the output cannot be written)."""
    return _report(journal, outdir)[0]


def _report(journal: str | Path, outdir: str | Path | None) -> tuple[Path, RunSummary]:
    """:func:`make_report`, and the run's summary (the journal read once)."""
    path = find_journal(journal)
    out = Path(outdir) if outdir else path.parent / "report"
    out.mkdir(parents=True, exist_ok=True)
    record, summary = read_and_summarize(path)
    draw_timeline(record, out / "timeline.png")
    draw_utilization(record, out / "utilization.png")
    write_tables(summary, out)
    write_html(record, summary, out)
    return out, summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="matensemble-report",
        description="Draw the timeline, utilization and per-rule table of a matensemble run.",
    )
    parser.add_argument("journal", help="journal.jsonl, a run directory, or .snakemake/matensemble")
    parser.add_argument("-o", "--output", help="output directory (default: <run>/report)")
    args = parser.parse_args(argv)
    try:
        out, summary = _report(args.journal, args.output)
    except FileNotFoundError as error:
        parser.exit(2, f"matensemble-report: {error}\n")
    sys.stdout.write("\n".join(summary_lines(summary)) + "\n")
    from ..campaign.report import draw_chain  # a run over several allocations

    chain = draw_chain(find_journal(args.journal), out / "allocations.png")
    sys.stdout.write("".join(f"{line}\n" for line in chain))
    sys.stdout.write(
        f"wrote {out}/timeline.png, utilization.png, rules.csv, rules.md, "
        + ("instances.csv, instances.md, " if summary.instances else "")
        + "report.html"
        + (", allocations.png (every allocation)\n" if chain else "\n")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
