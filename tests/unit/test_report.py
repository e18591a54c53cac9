"""matensemble-report on hand-written journals: pictures, tables, page, CLI."""

import csv

import matplotlib
import pytest

from snakemake_executor_plugin_matensemble.journal import read_journal
from snakemake_executor_plugin_matensemble.report import (
    OUTCOME_STYLES,
    main,
    make_report,
    timeline_figure,
)

from .journal_events import RUN, job_events, write_events

matplotlib.use("Agg")


def journal(tmp_path, *jobs):
    events = [RUN, *(event for job in jobs for event in job)]
    return write_events(tmp_path / "run" / "journal.jsonl", events)


def legend_and_boxes(path):
    import matplotlib.pyplot as plt

    fig = timeline_figure(read_journal(path))
    try:
        (ax,) = fig.axes
        legend = ax.get_legend()
        labels = [text.get_text() for text in legend.get_texts()] if legend else []
        entries = dict(zip(labels, legend.get_patches() if legend else [], strict=True))
        boxes = [(p.get_hatch(), p.get_edgecolor()) for p in ax.patches]
        return labels, entries, boxes
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
