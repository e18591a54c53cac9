"""matensemble-report on hand-written journals: pictures, tables, page, CLI."""

import csv

import matplotlib
import pytest

from snakemake_executor_plugin_matensemble.observing import timeline
from snakemake_executor_plugin_matensemble.observing.journal import read_journal
from snakemake_executor_plugin_matensemble.observing.report import main, make_report
from snakemake_executor_plugin_matensemble.observing.timeline import (
    OUTCOME_STYLES,
    node_groups,
    occupancy,
    timeline_figure,
)

from .journal_events import RUN, job_events, write_events

matplotlib.use("Agg")


def journal(tmp_path, *jobs):
    events = [RUN, *(event for job in jobs for event in job)]
    return write_events(tmp_path / "run" / "journal.jsonl", events)


def boxes_of(ax):
    """(hatch, edge colour) of every box drawn, in drawing order (boxes are
    drawn as one collection per outcome)."""
    from matplotlib.collections import PolyCollection

    return [
        (c.get_hatch(), tuple(c.get_edgecolor()[0]))
        for c in ax.collections
        if isinstance(c, PolyCollection)
        for _ in c.get_paths()
    ]


def legend_and_boxes(path):
    import matplotlib.pyplot as plt

    fig = timeline_figure(read_journal(path))
    try:
        (ax,) = fig.axes
        legend = ax.get_legend()
        labels = [text.get_text() for text in legend.get_texts()] if legend else []
        entries = dict(zip(labels, legend.get_patches() if legend else [], strict=True))
        return labels, entries, boxes_of(ax)
    finally:
        plt.close(fig)


def test_no_failed_legend_entry_when_nothing_failed(tmp_path):
    path = journal(tmp_path, job_events(1, "a", 0.0, 1.0, [0]), job_events(2, "b", 0.0, 2.0, [1]))
    labels, _, boxes = legend_and_boxes(path)
    assert labels == ["a", "b"]
    assert all(hatch is None for hatch, _ in boxes)


def test_cancelled_jobs_have_their_own_style_and_legend_entry(tmp_path):
    path = journal(
        tmp_path,
        job_events(1, "a", 0.0, 1.0, [0], status="cancelled"),
        job_events(2, "a", 0.0, 2.0, [1], status="failed"),
    )
    labels, entries, boxes = legend_and_boxes(path)
    assert labels == ["a", "failed", "cancelled"]
    assert entries["cancelled"].get_hatch() == OUTCOME_STYLES["cancelled"]["hatch"]
    assert entries["failed"].get_hatch() == OUTCOME_STYLES["failed"]["hatch"]
    assert OUTCOME_STYLES["cancelled"]["hatch"] != OUTCOME_STYLES["failed"]["hatch"]
    # the boxes are drawn as the legend says: cancelled (core 0), failed (core 1)
    assert [hatch for hatch, _ in boxes] == ["..", "xx"]


def test_only_a_cancelled_job_shows_no_failed_entry(tmp_path):
    path = journal(tmp_path, job_events(1, "a", 0.0, 1.0, [0], status="cancelled"))
    assert legend_and_boxes(path)[0] == ["a", "cancelled"]


def test_tables_count_only_jobs_that_ran_and_show_attempts(tmp_path):
    path = journal(
        tmp_path,
        job_events(1, "work", 0.0, 1.0, [0], status="failed", jobid=1),
        job_events(2, "work", 1.0, 2.0, [0], jobid=1, attempt=2),
        job_events(3, "work", 0.0, 3.0, [1], jobid=2),
        job_events(4, "work", None, 3.0, [], status="cancelled", jobid=3),  # withdrawn
        job_events(5, "later", None, 3.0, [], status="cancelled", jobid=4),  # withdrawn
    )
    out = make_report(path, tmp_path / "report")
    table = (out / "rules.md").read_text().splitlines()
    assert table[0] == "| rule | jobs | attempts | mean_s | max_s | cores | gpus | failures |"
    assert table[2:] == ["| work | 2 | 3 | 1.67 | 3.00 | 1 | 0 | 0 |"]
    with open(out / "rules.csv") as stream:
        rows = list(csv.reader(stream))
    assert rows[1][:3] == ["work", "2", "3"]
    assert len(rows) == 2
    page = (out / "report.html").read_text()
    assert "0 failed" in page
    assert "(retried)" in page
    assert page.count("data:image/png;base64,") == 2


def test_a_killed_run_journal_gives_every_picture_and_table(tmp_path):
    path = write_events(
        tmp_path / "journal.jsonl",
        [RUN, *job_events(1, "a", 10.0, 12.0, [0]), *job_events(2, "b", 10.0, None, [1])],
        torn_tail='{"event": "finished", "t": 13.0, "ke',
    )
    out = make_report(path, tmp_path / "report")
    for name in ("timeline.png", "utilization.png", "rules.csv", "rules.md", "report.html"):
        assert (out / name).stat().st_size > 0
    assert "1 still running when the journal ends" in (out / "report.html").read_text()


def test_report_cli_names_a_missing_journal(tmp_path, capsys):
    with pytest.raises(SystemExit) as caught:
        main([str(tmp_path)])
    assert caught.value.code == 2
    assert "no journal.jsonl" in capsys.readouterr().err


def test_report_cli_finds_the_newest_run_and_prints_the_summary(tmp_path, capsys):
    journal(tmp_path / "runs", job_events(1, "a", 0.0, 1.0, [0]))
    assert main([str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "matensemble: 1 job(s) done, 0 failed" in out
    assert (tmp_path / "runs" / "run" / "report" / "timeline.png").is_file()


# -- more jobs than pixels: the aggregated timeline --------------------------------------

NODES_RUN = {
    **RUN,
    "nodes": [{"rank": r, "name": f"n{r}", "cores": [0, 1], "gpus": ["0"]} for r in range(5)],
}


def busy_journal(tmp_path):
    """Five nodes, six attempts (one failed, one cancelled)."""
    jobs = [
        job_events(1, "a", 0.0, 4.0, [0, 1], rank=0),
        job_events(2, "b", 0.0, 2.0, [0], rank=1, gpus=["0"]),
        job_events(3, "b", 1.0, 3.0, [1], rank=2, status="failed"),
        job_events(4, "a", 2.0, 4.0, [0], rank=3, status="cancelled"),
        job_events(5, "a", 0.0, 1.0, [0], rank=4),
        job_events(6, "b", 1.0, 4.0, [1], rank=4),
    ]
    events = [NODES_RUN, *(event for job in jobs for event in job)]
    return write_events(tmp_path / "run" / "journal.jsonl", events)


def title_and_artists(path, **limits):
    import matplotlib.pyplot as plt

    fig = timeline_figure(read_journal(path), **limits)
    try:
        (ax,) = fig.axes
        labels = [text.get_text() for text in ax.get_legend().get_texts()]
        return ax.get_title(), len(ax.images), len(boxes_of(ax)) + len(ax.patches), labels
    finally:
        plt.close(fig)


@pytest.mark.snakemake_independent
def test_few_boxes_keep_one_lane_per_core(tmp_path):
    title, images, patches, _ = title_and_artists(busy_journal(tmp_path))
    assert "aggregated" not in title
    assert (images, patches) == (0, 8)  # one box per attempt and core or GPU


@pytest.mark.snakemake_independent
def test_more_boxes_than_the_limit_aggregate_lanes_per_node(tmp_path):
    title, images, patches, labels = title_and_artists(busy_journal(tmp_path), max_boxes=7)
    assert "aggregated (one lane per node)" in title
    assert "6 attempts on 5 node(s)" in title
    assert (images, patches) == (1, 0)  # one image, not a box per job
    assert labels == ["a", "b", "failed", "cancelled"]


@pytest.mark.snakemake_independent
def test_more_lanes_than_the_limit_group_nodes(tmp_path):
    title, images, _, _ = title_and_artists(busy_journal(tmp_path), max_lanes=2)
    assert "aggregated (one lane per 3 nodes)" in title
    assert images == 1


@pytest.mark.snakemake_independent
def test_the_report_writes_the_aggregated_timeline(tmp_path, monkeypatch):
    monkeypatch.setattr(timeline, "MAX_BOXES", 2)
    out = make_report(busy_journal(tmp_path), tmp_path / "report")
    assert (out / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "data:image/png;base64," in (out / "report.html").read_text()


@pytest.mark.snakemake_independent
def test_node_groups_cover_every_node_in_at_most_limit_lanes(tmp_path):
    record = read_journal(busy_journal(tmp_path))
    per, labels, lane_of, capacity = node_groups(record, 2)
    assert per == 3
    assert labels == ["rank 0-2", "rank 3-4"]
    assert lane_of == {0: 0, 1: 0, 2: 0, 3: 1, 4: 1}
    assert capacity == [9, 6]  # two cores and a GPU per node
    assert node_groups(record, 10)[1] == [f"rank {r}" for r in range(5)]


@pytest.mark.snakemake_independent
def test_occupancy_is_exact_per_column_and_names_the_busiest_rule():
    # lane 0: rule 0 holds 2 from 0.5 to 2.5; rule 1 holds 4 from 2 to 3;
    # lane 1: rule 1 holds 1 from 0 to 3
    total, dominant = occupancy(
        lane=[0, 0, 1],
        rule=[0, 1, 1],
        start=[0.5, 2.0, 0.0],
        end=[2.5, 3.0, 3.0],
        weight=[2, 4, 1],
        lanes_count=2,
        rules_count=2,
        edges=[0.0, 1.0, 2.0, 3.0],
    )
    assert total.tolist() == [[1.0, 2.0, 5.0], [1.0, 1.0, 1.0]]
    assert dominant.tolist() == [[0, 0, 1], [1, 1, 1]]
