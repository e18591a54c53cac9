"""The allocation's end: parsing the setting, runtime estimates, the resume command."""

import datetime as dt
import math
import os

import pytest

from snakemake_executor_plugin_matensemble.observing.journal import read_journal
from snakemake_executor_plugin_matensemble.observing.runtimes import (
    durations_from_journals,
    observed_durations,
)
from snakemake_executor_plugin_matensemble.packing.deadline import (
    DeadlineGuard,
    parse_deadline,
    resume_command,
)

from .journal_events import RUN, job_events, write_events

NOW = 1_795_420_000.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90m", NOW + 5400),
        ("2h30m", NOW + 9000),
        ("45s", NOW + 45),
        ("1.5h", NOW + 5400),
        ("1795423600", 1795423600.0),
        ("none", math.inf),
        (None, None),
        ("", None),
    ],
)
def test_deadline_setting(text, expected):
    assert parse_deadline(text, now=NOW) == expected


def test_deadline_as_iso_time_and_time_of_day():
    when = dt.datetime(2026, 11, 23, 18, 0).timestamp()
    assert parse_deadline("2026-11-23T18:00", now=NOW) == when
    assert (
        parse_deadline("2026-11-23 18:00:00+00:00", now=NOW)
        == dt.datetime(2026, 11, 23, 18, tzinfo=dt.UTC).timestamp()
    )
    today = parse_deadline("18:00", now=when - 60)
    assert today == when
    assert parse_deadline("18:00", now=when + 60) == when + 86400  # tomorrow


def test_a_bad_deadline_says_what_is_accepted():
    with pytest.raises(ValueError, match="duration from now"):
        parse_deadline("soonish", now=NOW)


def test_resume_command_repeats_the_run_and_reruns_incomplete_jobs():
    assert (
        resume_command(["/venv/bin/snakemake", "--executor", "matensemble", "-j", "unlimited"])
        == "/venv/bin/snakemake --executor matensemble -j unlimited --rerun-incomplete"
    )
    module = resume_command(
        ["/venv/lib/python3.11/site-packages/snakemake/__main__.py", "-j", "4", "--ri"],
        executable="/venv/bin/python",
    )
    assert module == "/venv/bin/python -m snakemake -j 4 --ri"
    quoted = resume_command(["snakemake", "--config", "name=a b"])
    assert quoted == "snakemake --config 'name=a b' --rerun-incomplete"


def test_runtimes_of_earlier_runs_are_the_longest_successful_ones(tmp_path):
    first = tmp_path / "20261123T080000-1" / "journal.jsonl"
    write_events(
        first,
        [
            RUN,
            *job_events(1, "md", 100.0, 150.0, [0]),
            *job_events(2, "md", 100.0, 900.0, [1], status="failed"),
            *job_events(3, "prep", 100.0, 101.5, [0]),
        ],
    )
    later = tmp_path / "20261124T080000-1" / "journal.jsonl"
    write_events(later, [RUN, *job_events(1, "md", 10.0, 80.0, [0])])
    runs = [read_journal(first), read_journal(later)]
    assert observed_durations(runs) == {"md": 70.0, "prep": 1.5}


def test_an_attempt_snakemake_failed_afterwards_is_no_estimate(tmp_path):
    path = tmp_path / "20261123T080000-1" / "journal.jsonl"
    write_events(
        path,
        [
            RUN,
            *job_events(1, "md", 0.0, 500.0, [0]),
            # the backend said success; Snakemake found the output missing
            {"event": "verdict", "t": 501.0, "key": 1, "status": "failed", "reason": "missing"},
            *job_events(2, "md", 0.0, 60.0, [1]),
        ],
    )
    assert durations_from_journals(tmp_path) == {"md": 60.0}


def test_estimates_come_from_the_newest_journals_by_run_id(tmp_path):
    # the file times say the opposite of the run ids: the run id decides
    old = write_events(
        tmp_path / "20261101T080000-1" / "journal.jsonl", [RUN, *job_events(1, "md", 0, 10, [0])]
    )
    new = write_events(
        tmp_path / "20261123T080000-1" / "journal.jsonl", [RUN, *job_events(1, "md", 0, 20, [0])]
    )
    os.utime(old, (2_000_000_000, 2_000_000_000))
    os.utime(new, (1_000_000_000, 1_000_000_000))
    assert durations_from_journals(tmp_path, limit=1) == {"md": 20.0}


def test_estimates_read_from_journal_files(tmp_path):
    run = tmp_path / "20261123T080000-1"
    run.mkdir()
    (run / "journal.jsonl").write_text(
        '{"event": "queued", "t": 1.0, "key": 1, "rule": "md"}\n'
        '{"event": "started", "t": 5.0, "key": 1, "start": 5.0}\n'
        '{"event": "finished", "t": 65.0, "key": 1, "status": "success"}\n'
        '{"event": "fini'  # a torn last line
    )
    assert durations_from_journals(tmp_path) == {"md": 60.0}


def test_guard_converts_the_epoch_end_to_the_packers_clock():
    guard = DeadlineGuard(clock=lambda: 50.0, wall=lambda: NOW, margin=5)
    guard.set_end(NOW + 100)
    assert guard.end == 150.0
    assert guard.end_epoch == NOW + 100
    guard.set_end(None)
    assert guard.end is None
    fixed = DeadlineGuard(override=NOW + 10, clock=lambda: 0.0, wall=lambda: NOW)
    fixed.set_end(NOW + 1000)  # the backend's end does not override the setting
    assert fixed.end == 10.0
    assert DeadlineGuard(override=math.inf).end is None


def test_jobs_of_unknown_runtime_are_warned_about_once(caplog):
    from types import SimpleNamespace

    from snakemake_executor_plugin_matensemble.packing.resource_request import ResourceRequest

    unknown = SimpleNamespace(request=ResourceRequest(), rule="md")
    guard = DeadlineGuard(clock=lambda: 0.0, wall=lambda: NOW, margin=10)
    assert guard.latest_start(unknown) == math.inf  # no end: nothing to say
    guard.set_end(NOW + 100)
    assert guard.latest_start(unknown) == 90.0
    assert guard.latest_start(unknown) == 90.0
    warnings = [r for r in caplog.records if "without a runtime" in r.getMessage()]
    assert len(warnings) == 1
    held = DeadlineGuard(clock=lambda: 0.0, wall=lambda: NOW, unknown="hold", override=NOW + 100)
    assert held.latest_start(unknown) == -math.inf


def test_the_guard_takes_every_value_from_the_settings(tmp_path):
    from snakemake_executor_plugin_matensemble.settings import ExecutorSettings

    write_events(
        tmp_path / "20261123T080000-1" / "journal.jsonl", [RUN, *job_events(1, "md", 0, 9, [0])]
    )
    guard = DeadlineGuard.from_settings(
        ExecutorSettings(journal_dir=str(tmp_path)), durations_from_journals
    )
    defaults = ExecutorSettings()
    assert guard.estimator.mode == defaults.runtime_estimate == "journal"
    assert guard.estimator.observed == {"md": 9.0}
    assert guard.margin == defaults.deadline_margin
    assert guard.unknown == defaults.unknown_runtime
