"""The live status line, its counters and the status file."""

import json
import logging
import time

from snakemake_executor_plugin_matensemble.backends.base import JobStatus
from snakemake_executor_plugin_matensemble.observing import status as status_module
from snakemake_executor_plugin_matensemble.observing.status import RunStatus, StatusReporter


def status(**changes) -> RunStatus:
    fields = dict(
        queued=3, running=2, free_cores=1, total_cores=8, free_gpus=0, total_gpus=0, done=5
    )
    return RunStatus(**{**fields, "failed": 1, **changes})


def test_status_line():
    assert status().line() == (
        "matensemble: 3 queued, 2 running, 1/8 cores free, 5 done, 1 failed."
    )
    assert "1/4 GPUs free" in status(free_gpus=1, total_gpus=4).line()


def test_run_status_is_not_the_backend_status():
    assert RunStatus is not JobStatus
    assert not hasattr(status_module, "Status")
    assert not hasattr(status_module, "JobStatus")


def test_a_job_that_failed_then_succeeded_on_retry_is_counted_once_as_done():
    reporter = StatusReporter(0, None)
    reporter.finished("7", ok=False)
    assert (reporter.done, reporter.failed) == (0, 1)
    reporter.finished("7", ok=True)
    reporter.finished("8", ok=True)
    reporter.finished("9", ok=False)
    reporter.finished("9", ok=False)
    assert (reporter.done, reporter.failed) == (2, 1)


def test_status_file_is_replaced_atomically_with_an_epoch_time(tmp_path):
    path = tmp_path / "dash" / "status.json"
    reporter = StatusReporter(0, str(path))
    assert reporter.tick_interval == 5.0
    before = time.time()
    reporter.report(status())
    data = json.loads(path.read_text())
    assert before <= data["time"] <= time.time()
    assert (data["done"], data["failed"], data["queued"]) == (5, 1, 3)
    assert [p.name for p in path.parent.iterdir()] == ["status.json"]


def test_interval_logs_a_line_and_zero_logs_none(caplog):
    with caplog.at_level(logging.INFO, logger="snakemake.logging.matensemble"):
        StatusReporter(0, None).report(status())
        assert not caplog.records
        reporter = StatusReporter(30, None)
        assert reporter.tick_interval == 30
        reporter.report(status())
    assert [r.getMessage() for r in caplog.records] == [status().line()]
    assert StatusReporter(0, None).tick_interval is None
