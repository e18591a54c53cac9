"""The run-end record: its reason, written atomically, and real Snakemake runs."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from snakemake_executor_plugin_matensemble.observing.run_end import (
    RUN_END_ENV,
    LeftForTheEnd,
    RunEndRecorder,
    final_reason,
    read_run_end,
    run_end_path,
)

from ..helpers import run_snakemake, start_snakemake, wait_until, write_snakefile


@pytest.mark.parametrize(
    ("interrupted", "failed", "left", "done", "reason"),
    [
        (False, False, False, 3, "complete"),
        (False, False, True, 3, "allocation_ended"),
        (False, False, True, 0, "no_progress"),
        (False, True, True, 3, "job_failed"),
        (True, True, True, 0, "interrupted"),
    ],
)
def test_the_most_telling_reason_wins(interrupted, failed, left, done, reason):
    assert final_reason(interrupted, failed, left, done) == reason


def test_the_record_says_running_then_the_first_failure_then_the_final_counts(tmp_path):
    recorder = RunEndRecorder(tmp_path / "run-end.json", "r1", "j.jsonl")
    assert read_run_end(tmp_path / "run-end.json").reason == "running"
    recorder.total_jobs = 5
    recorder.job_failed("bad", "bad[i=1]", "logs/bad.log", "exit 1")
    recorder.job_failed("other", "other", "logs/other.log", "exit 2")
    assert read_run_end(tmp_path / "run-end.json").reason == "job_failed"
    recorder.finish(done=2, failed=2)
    record = read_run_end(tmp_path / "run-end.json")
    assert (record.reason, record.rule, record.log) == ("job_failed", "bad", "logs/bad.log")
    assert (record.done, record.left) == (2, 3)
    assert not list(tmp_path.glob(".run-end.json.*")), "a temporary file was left"


def test_no_progress_names_the_longest_job_and_the_walltime(tmp_path):
    recorder = RunEndRecorder(tmp_path / "e.json", "r1")
    end = time.time() + 120
    recorder.left_for_the_end([LeftForTheEnd("a", 60.0), LeftForTheEnd("long", 300.0)], end)
    assert read_run_end(tmp_path / "e.json").reason == "allocation_ended"
    record = recorder.finish(done=0, failed=0)
    assert (record.reason, record.job, record.runtime_s) == ("no_progress", "long", 300.0)
    assert 115 <= record.walltime_s <= 121


def test_the_environment_names_the_path(tmp_path, monkeypatch):
    assert run_end_path(tmp_path) == tmp_path / "run-end.json"
    monkeypatch.setenv(RUN_END_ENV, str(tmp_path / "c" / "x.json"))
    assert run_end_path(tmp_path) == tmp_path / "c" / "x.json"


FLOW = """
rule all:
    input: "a.txt", "b.txt"

rule a:
    output: "a.txt"
    shell: "echo a > {output}"

rule b:
    output: "b.txt"
    resources: runtime=10
    shell: "echo b > {output}"
"""

FAILING = """
rule all:
    input: "x.txt"

rule bad:
    output: "x.txt"
    shell: "exit 3"
"""


def _record(workdir):
    return json.loads((workdir / ".snakemake" / "matensemble" / "run-end.json").read_text())


def test_a_real_run_records_complete_then_the_allocations_end(tmp_path):
    write_snakefile(tmp_path, FLOW)
    done = run_snakemake(tmp_path, "--matensemble-backend", "local")
    assert done.returncode == 0, done.output[-2000:]
    record = _record(tmp_path)
    assert (record["reason"], record["done"], record["left"]) == ("complete", 2, 0), record

    (tmp_path / "a.txt").unlink()
    (tmp_path / "b.txt").unlink()
    # b needs 10 minutes, the allocation ends in 5: a runs, b is left.
    ended = run_snakemake(
        tmp_path, "--matensemble-backend", "local", "--matensemble-deadline", "5m"
    )
    assert ended.returncode != 0
    record = _record(tmp_path)
    assert record["reason"] == "allocation_ended", record
    assert (record["done"], record["left"]) == (1, 1), record


def test_a_real_run_names_the_job_that_never_fits(tmp_path):
    write_snakefile(
        tmp_path,
        FLOW.replace(
            'rule a:\n    output: "a.txt"',
            'rule a:\n    output: "a.txt"\n    resources: runtime=10',
        ),
    )
    run = run_snakemake(tmp_path, "--matensemble-backend", "local", "--matensemble-deadline", "5m")
    assert run.returncode != 0
    record = _record(tmp_path)
    assert record["reason"] == "no_progress", record
    assert record["runtime_s"] == 600, record
    assert 290 <= record["walltime_s"] <= 301, record


def test_a_real_failure_names_the_rule_and_its_log(tmp_path):
    write_snakefile(tmp_path, FAILING)
    run = run_snakemake(tmp_path, "--matensemble-backend", "local")
    assert run.returncode != 0
    record = _record(tmp_path)
    assert (record["reason"], record["rule"]) == ("job_failed", "bad"), record
    assert (tmp_path / record["log"]).is_file(), record


SLEEPER = """
rule all:
    input: "s.txt"

rule sleeper:
    output: "s.txt"
    shell: "echo started > started; sleep 300; touch {output}"
"""


def test_a_real_run_stopped_by_sigterm_then_sighup_records_interrupted(tmp_path):
    """A Flux broker stopped by a signal sends its initial program SIGTERM and
    then SIGHUP: the second signal must not cut the cancel (and the record) short."""
    write_snakefile(tmp_path, SLEEPER)
    log = tmp_path / "snakemake.log"

    def started() -> bool:
        if not (tmp_path / "started").exists():
            return False
        time.sleep(0.5)
        return True

    process = start_snakemake(tmp_path, "--matensemble-backend", "local", log=log)
    try:
        assert wait_until(started, 60), log.read_text()
        os.kill(process.pid, signal.SIGTERM)
        while process.poll() is None:  # hang ups all through the cancel
            os.kill(process.pid, signal.SIGHUP)
            time.sleep(0.01)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    record = _record(tmp_path)
    assert record["reason"] == "interrupted", record
    assert record["ended"] is not None, log.read_text()[-2000:]
