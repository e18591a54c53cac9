"""``matensemble-report``: pictures and tables of a run from its journal.

    matensemble-report .snakemake/matensemble            # newest run
    matensemble-report path/to/journal.jsonl -o report/   # a journal copied off a cluster

Writes ``timeline.png`` (one lane per core and per GPU of every node, boxes
coloured by rule, failed attempts hatched in red, cancelled ones dotted grey,
jobs cut off by the end of the journal dashed; with more jobs than pixels,
one lane per node or group of nodes, coloured by the busiest rule and shaded
by occupancy, see :func:`aggregated_timeline`), ``utilization.png`` (cores
and GPUs in use over time), ``rules.csv``/``rules.md`` (per rule, over the
jobs that ran: jobs, attempts, mean/max runtime, cores, GPUs, failed jobs)
and ``report.html`` (all of it in one self-contained page). Times on the
x axes are seconds since the first job started.
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import sys
from collections.abc import Sequence
from pathlib import Path

from .journal import JobRecord, RunRecord, journal_paths
from .summary import RunSummary, read_and_summarize, summary_lines

#: Most lanes (cores and GPUs) drawn one per core and GPU; above, lanes are aggregated.
MAX_LANES = 512
#: Most boxes (an attempt on one core or GPU) drawn one by one; above, more
#: jobs than pixels: lanes are aggregated.
MAX_BOXES = 20_000
#: Most lanes of an aggregated timeline (a lane: a node or a group of nodes),
#: a few pixels each at the figure's height.
AGGREGATED_LANES = 256
#: Time columns of an aggregated timeline (about the axes' width in pixels).
TIME_BINS = 1000


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


def lanes(record: RunRecord) -> list[tuple[int, str, str]]:
    """(rank, "core"|"gpu", id) for every core and GPU of the allocation."""
    out = []
    for node in record.run.get("nodes", []):
        out += [(node["rank"], "core", str(c)) for c in node["cores"]]
        out += [(node["rank"], "gpu", str(g)) for g in node["gpus"]]
    return out


def _colors(rules: Sequence[str]) -> dict[str, tuple]:
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    return {rule: cmap(i % 20) for i, rule in enumerate(sorted(set(rules)))}


#: How the timeline draws an attempt that did not succeed (the box keeps its
#: rule's colour); attempts that succeeded or still run have no entry.
OUTCOME_STYLES: dict[str, dict] = {
    "failed": {"edgecolor": "red", "linewidth": 1.2, "hatch": "xx"},
    "cancelled": {"edgecolor": "dimgray", "linewidth": 1.0, "hatch": "..", "alpha": 0.55},
}
_PLAIN = {"edgecolor": "black", "linewidth": 0.3, "hatch": None}


def outcome_of(job: JobRecord) -> str | None:
    """``failed``, ``cancelled`` or None (succeeded, or still running)."""
    if job.failed:
        return "failed"
    return "cancelled" if job.status == "cancelled" else None


def timeline_figure(record: RunRecord, max_lanes: int | None = None, max_boxes: int | None = None):
    """The timeline as a matplotlib figure (the caller closes it).

    One lane per core and GPU while there are at most ``max_lanes`` lanes
    (default :data:`MAX_LANES`) and at most ``max_boxes`` boxes to draw (one
    per attempt and core or GPU it held; default :data:`MAX_BOXES`); beyond
    that, more jobs than pixels: lanes are aggregated per node or group of
    nodes (:func:`aggregated_timeline`), and the title says so.
    """
    max_lanes = MAX_LANES if max_lanes is None else max_lanes
    max_boxes = MAX_BOXES if max_boxes is None else max_boxes
    ran = [job for job in record.jobs if job.ran]
    boxes = sum(job.cores + job.gpus for job in ran)
    if len(lanes(record)) > max_lanes or boxes > max_boxes:
        return aggregated_timeline(record, min(max_lanes, AGGREGATED_LANES))
    return per_core_timeline(record)


def per_core_timeline(record: RunRecord):
    """One lane per core and GPU; x is seconds since the first attempt started
    (all times are the journal's epoch seconds). The legend lists the rules,
    then one entry per outcome drawn (failed, cancelled): only those present.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    all_lanes = lanes(record)
    shown = all_lanes[:MAX_LANES]
    index = {lane: i for i, lane in enumerate(shown)}
    ran = [job for job in record.jobs if job.ran]
    t0 = min((job.start for job in ran), default=0.0)
    colors = _colors([job.rule for job in ran])
    height = min(0.25 * len(shown) + 1.5, 60)
    fig, ax = plt.subplots(figsize=(12, max(3.0, height)))
    boxes: dict[tuple[str | None, bool], list] = {}
    for job in ran:
        end = job.end if job.end is not None else record.last_time
        mine = boxes.setdefault((outcome_of(job), job.end is None), [])
        for share in job.placement:
            for kind, ids in (("core", share["cores"]), ("gpu", share["gpus"])):
                for lane_id in ids:
                    row = index.get((share["rank"], kind, str(lane_id)))
                    if row is not None:
                        mine.append((job.start - t0, end - t0, row, colors[job.rule]))
    drawn = {outcome for (outcome, _), items in boxes.items() if outcome and items}
    for (outcome, cut_off), items in boxes.items():
        if items:
            ax.add_collection(_box_collection(items, outcome, cut_off))
    ax.autoscale_view()
    ax.set_yticks(range(len(shown)))
    ax.set_yticklabels([f"rank {r} {k} {i}" for r, k, i in shown], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("time since the first job started (s)")
    cut = f" (first {MAX_LANES} of {len(all_lanes)} lanes)" if len(all_lanes) > MAX_LANES else ""
    ax.set_title(f"What ran where: run {record.run.get('run', '?')}{cut}")
    handles = [Patch(color=c, label=rule) for rule, c in colors.items()]
    for outcome, style in OUTCOME_STYLES.items():
        if outcome in drawn:
            handles.append(Patch(facecolor="white", label=outcome, **style))
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    fig.tight_layout()
    return fig


def _box_collection(items: list, outcome: str | None, cut_off: bool):
    """The boxes (left, right, lane, colour) of one outcome as one collection,
    drawn as ``barh`` would (height 0.8, the outcome's edge and hatch;
    dashed: cut off by the end of the journal)."""
    from matplotlib.collections import PolyCollection

    verts = [((x0, y - 0.4), (x0, y + 0.4), (x1, y + 0.4), (x1, y - 0.4)) for x0, x1, y, _ in items]
    collection = PolyCollection(
        verts,
        facecolors=[color for *_, color in items],
        linestyles="--" if cut_off else "-",
        **(OUTCOME_STYLES[outcome] if outcome else _PLAIN),
    )
    collection.sticky_edges.x.append(min(x0 for x0, *_ in items))
    return collection


def node_groups(record: RunRecord, limit: int) -> tuple[int, list[str], dict[int, int], list[int]]:
    """Lanes of an aggregated timeline: the nodes in rank order, ``per``
    consecutive nodes a lane so that there are at most ``limit`` lanes.
    Returns ``per``, the lanes' labels, rank -> lane, and each lane's cores
    plus GPUs."""
    nodes = record.run.get("nodes", [])
    per = max(1, -(-len(nodes) // max(1, limit)))
    labels: list[str] = []
    lane_of: dict[int, int] = {}
    capacity: list[int] = []
    for i, node in enumerate(nodes):
        lane = i // per
        if lane == len(labels):
            labels.append(f"rank {node['rank']}")
            capacity.append(0)
        elif i % per == per - 1 or i == len(nodes) - 1:
            labels[lane] += f"-{node['rank']}"
        lane_of[node["rank"]] = lane
        capacity[lane] += len(node["cores"]) + len(node["gpus"])
    return per, labels, lane_of, capacity


def occupancy(
    lane: Sequence[int],
    rule: Sequence[int],
    start: Sequence[float],
    end: Sequence[float],
    weight: Sequence[float],
    lanes_count: int,
    rules_count: int,
    edges: Sequence[float],
):
    """Per lane and time column (between consecutive ``edges``): the
    resource-seconds in use (cores plus GPUs held x seconds, exact for any
    start and end), and the rule that used the most of them (-1: none).

    Each segment (an attempt's share on one lane) adds ``weight`` from
    ``start`` to ``end``; cost O(segments + lanes x columns) per rule, never
    per segment and column.
    """
    import numpy as np

    lane, rule = np.asarray(lane, dtype=np.int64), np.asarray(rule, dtype=np.int64)
    start, end = np.asarray(start, dtype=float), np.asarray(end, dtype=float)
    weight, edges = np.asarray(weight, dtype=float), np.asarray(edges, dtype=float)
    width = len(edges)
    size = lanes_count * width
    total = np.zeros((lanes_count, width - 1))
    best = np.zeros((lanes_count, width - 1))
    dominant = np.full((lanes_count, width - 1), -1)
    for r in range(rules_count):
        mine = rule == r
        # In use up to edge x: sum of w * (min(x, e) - min(x, s)) over segments
        # started before x, from running sums of w and w*t in edge order.
        rate = np.zeros(size)
        offset = np.zeros(size)
        for times, sign in ((start[mine], 1.0), (end[mine], -1.0)):
            at = lane[mine] * width + np.searchsorted(edges, times)
            rate += np.bincount(at, sign * weight[mine], minlength=size)[:size]
            offset += np.bincount(at, sign * weight[mine] * times, minlength=size)[:size]
        used = edges * rate.reshape(lanes_count, width).cumsum(axis=1)
        used -= offset.reshape(lanes_count, width).cumsum(axis=1)
        busy = np.diff(used, axis=1)
        total += busy
        more = busy > best
        best[more], dominant[more] = busy[more], r
    return total, dominant


def _segments(ran: list[JobRecord], lane_of: dict[int, int], rules: dict[str, int], until: float):
    """Per attempt and lane it used: lane, rule, start, end, cores plus GPUs."""
    lane, rule, start, end, weight = [], [], [], [], []
    for job in ran:
        stop = job.end if job.end is not None else until
        held: dict[int, int] = {}
        for share in job.placement:
            row = lane_of.get(share["rank"])
            if row is not None:
                held[row] = held.get(row, 0) + len(share["cores"]) + len(share["gpus"])
        for row, amount in held.items():
            lane.append(row)
            rule.append(rules[job.rule])
            start.append(job.start)
            end.append(max(stop, job.start))
            weight.append(amount)
    return lane, rule, start, end, weight


def aggregated_timeline(record: RunRecord, limit: int = AGGREGATED_LANES):
    """The timeline when jobs outnumber pixels: one lane per node, or per
    group of consecutive nodes when there are more than ``limit``; each lane
    and time column coloured by the rule that held most of its cores and GPUs,
    shaded by how much of them were in use (white: idle). Failed attempts are
    marked with a red x where they ended, cancelled ones with a grey dot.
    Drawn as one image and one marker collection per outcome, whatever the
    number of jobs.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    per, labels, lane_of, capacity = node_groups(record, limit)
    ran = [job for job in record.jobs if job.ran]
    colors = _colors([job.rule for job in ran])
    rules = {rule: i for i, rule in enumerate(colors)}
    lane, rule, start, end, weight = _segments(ran, lane_of, rules, record.last_time)
    t0 = min(start, default=0.0)
    span = max(max(end, default=t0) - t0, 1e-9)
    edges = np.linspace(0.0, span, TIME_BINS + 1)
    total, dominant = occupancy(
        lane,
        rule,
        np.asarray(start) - t0,
        np.asarray(end) - t0,
        weight,
        len(labels),
        len(rules),
        edges,
    )
    shade = np.clip(total / (np.maximum(capacity, 1)[:, None] * (edges[1] - edges[0])), 0, 1)
    palette = np.array([colors[r][:3] for r in colors] + [(1.0, 1.0, 1.0)])
    image = 1.0 - shade[..., None] * (1.0 - palette[dominant])
    fig, ax = plt.subplots(figsize=(12, max(3.0, min(0.045 * len(labels) + 2.5, 14))))
    ax.imshow(
        image,
        aspect="auto",
        interpolation="nearest",
        extent=(0.0, span, len(labels) - 0.5, -0.5),
    )
    handles: list = [Patch(color=c, label=rule) for rule, c in colors.items()]
    for outcome, marker, color in (("failed", "x", "red"), ("cancelled", ".", "dimgray")):
        marks = [
            (job.end - t0, lane_of[job.placement[0]["rank"]])
            for job in ran
            if outcome_of(job) == outcome
            and job.end is not None
            and job.placement
            and job.placement[0]["rank"] in lane_of
        ]
        if marks:
            xs, ys = zip(*marks, strict=True)
            ax.scatter(xs, ys, marker=marker, s=12, color=color, linewidths=0.8)
            handles.append(Line2D([], [], marker=marker, color=color, ls="", label=outcome))
    step = max(1, -(-len(labels) // 40))
    ax.set_yticks(range(0, len(labels), step))
    ax.set_yticklabels(labels[::step], fontsize=7)
    ax.set_xlim(0.0, span)
    ax.set_xlabel("time since the first job started (s)")
    nodes = len(record.run.get("nodes", []))
    lane_text = "one lane per node" if per == 1 else f"one lane per {per} nodes"
    ax.set_title(
        f"What ran where: run {record.run.get('run', '?')}: {len(ran):,} attempts on "
        f"{nodes:,} node(s), aggregated ({lane_text})\ncolour: the rule holding most of "
        "the lane's cores and GPUs; shade: share of them in use (white: idle)",
        fontsize=9,
    )
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    fig.tight_layout()
    return fig


def draw_timeline(record: RunRecord, path: Path) -> None:
    """Write the timeline picture to ``path`` (PNG)."""
    import matplotlib.pyplot as plt

    fig = timeline_figure(record)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def usage_over_time(jobs: list[JobRecord], until: float, attr: str) -> tuple[list, list]:
    """Step function of cores (or GPUs) in use: times (epoch seconds) and
    counts after each change. Attempts still running end at ``until``."""
    events = []
    for job in jobs:
        if job.ran:
            amount = getattr(job, attr)
            events.append((job.start, amount))
            events.append((job.end if job.end is not None else until, -amount))
    events.sort()
    times, counts, level = [], [], 0
    for t, delta in events:
        level += delta
        times.append(t)
        counts.append(level)
    return times, counts


def draw_utilization(record: RunRecord, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 3.5))
    ran = [job for job in record.jobs if job.ran]
    t0 = min((job.start for job in ran), default=0.0)
    for attr, total, label in (
        ("cores", record.total_cores, "cores"),
        ("gpus", record.total_gpus, "GPUs"),
    ):
        if not total:
            continue
        times, counts = usage_over_time(record.jobs, record.last_time, attr)
        if times:
            ax.step(
                [t - t0 for t in times],
                [100 * c / total for c in counts],
                where="post",
                label=f"{label} in use",
            )
    ax.set_ylim(0, 105)
    ax.set_ylabel("allocation in use (%)")
    ax.set_xlabel("time since the first job started (s)")
    ax.set_title("Utilization over time")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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


def write_tables(summary: RunSummary, outdir: Path) -> None:
    rows = rule_rows(summary)
    with open(outdir / "rules.csv", "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(RULE_COLUMNS)
        writer.writerows(rows)
    lines = ["| " + " | ".join(RULE_COLUMNS) + " |", "|" + "---|" * len(RULE_COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    (outdir / "rules.md").write_text("\n".join(lines) + "\n")


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{path.stem}" src="data:image/png;base64,{data}" style="max-width:100%">'


def write_html(record: RunRecord, summary: RunSummary, outdir: Path) -> None:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in RULE_COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
        for row in rule_rows(summary)
    )
    retried = {id(job) for job in summary.retried}
    failures = "".join(
        f"<li><b>{html.escape(job.label)}</b> ({html.escape(job.status)}, "
        f"attempt {job.attempt}): {html.escape(job.reason)} &mdash; log "
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
<h2>Rules</h2><table><tr>{head}</tr>{body}</table>
<h2>Failures</h2><ul>{failures or "<li>none</li>"}</ul>
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
    from .campaign.report import draw_chain  # a run over several allocations

    chain = draw_chain(find_journal(args.journal), out / "allocations.png")
    sys.stdout.write("".join(f"{line}\n" for line in chain))
    sys.stdout.write(
        f"wrote {out}/timeline.png, utilization.png, rules.csv, rules.md, report.html"
        + (", allocations.png (every allocation)\n" if chain else "\n")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
