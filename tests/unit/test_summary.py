"""Summary figures: counts by final outcome, attempts, makespan, utilization."""

import pytest

from snakemake_executor_plugin_matensemble.observing.journal import read_journal
from snakemake_executor_plugin_matensemble.observing.summary import summarize
from snakemake_executor_plugin_matensemble.observing.summary_text import summary_lines

from .journal_events import RUN, job_events, write_events


def summary_of(tmp_path, *jobs, end=True):
    events = [RUN, *(event for job in jobs for event in job)]
    if end:
        events.append({"event": "end", "t": max(e["t"] for e in events) + 0.5})
    return summarize(read_journal(write_events(tmp_path / "journal.jsonl", events)))


def test_summary_figures_match_a_hand_computed_case(tmp_path):
    # 2 cores: A on core 0 for 0-4 s, B on core 1 for 0-2 s, C on both for 4-6 s (fails)
    summary = summary_of(
        tmp_path,
        job_events(1, "a", 100.0, 104.0, [0]),
        job_events(2, "b", 100.0, 102.0, [1]),
        job_events(3, "c", 104.0, 106.0, [0, 1], status="failed", log="c.log"),
    )
    assert summary.makespan_s == pytest.approx(6.0)
    # core-seconds 4 + 2 + 2*2 = 10 over 2 cores x 6 s
    assert summary.core_utilization == pytest.approx(10 / 12)
    assert summary.gpu_utilization is None
    assert summary.lower_bound_s == pytest.approx(5.0)  # max(10 / 2, longest 4)
    assert summary.bound_ratio == pytest.approx(1.2)
    assert (summary.done, summary.failed, summary.attempts) == (2, 1, 3)
    assert [job.label for job in summary.failures] == ["c[i=3]"]
    by_rule = {s.rule: s for s in summary.rules}
    assert (by_rule["c"].cores, by_rule["c"].failures, by_rule["a"].max_s) == (2, 1, 4.0)
    lines = "\n".join(summary_lines(summary))
    assert "2 job(s) done, 1 failed, 0 cancelled, 0 not started." in lines
    assert "attempts" not in lines
    assert "makespan 6.0 s" in lines
    assert "cores 83%" in lines
    assert "best possible 5.0 s" in lines
    assert "failed: c[i=3] (failed): r. Log: c.log" in lines


def test_best_possible_counts_the_gpus_when_they_are_the_bottleneck(tmp_path):
    # 8 cores, 2 GPUs: four 1-core, 1-GPU jobs of 10 s. Cores allow 5 s
    # (40 core-s / 8), the longest job 10 s, the GPUs 20 s (40 GPU-s / 2).
    node = {"rank": 0, "name": "n0", "cores": list(range(8)), "gpus": [0, 1]}
    jobs = [
        job_events(i, "gpu", start, start + 10.0, [i], gpus=[i % 2])
        for i, start in enumerate([100.0, 100.0, 110.0, 110.0])
    ]
    events = [{**RUN, "nodes": [node]}, *(event for job in jobs for event in job)]
    summary = summarize(read_journal(write_events(tmp_path / "journal.jsonl", events)))
    assert summary.makespan_s == pytest.approx(20.0)
    assert summary.lower_bound_s == pytest.approx(20.0)
    assert summary.bound_ratio == pytest.approx(1.0)
    assert "best possible 20.0 s (makespan / bound = 1.00)" in "\n".join(summary_lines(summary))


def test_a_job_that_succeeded_on_retry_is_done_not_failed(tmp_path):
    summary = summary_of(
        tmp_path,
        job_events(1, "a", 0.0, 1.0, [0], status="failed", jobid=9, log="a1.log"),
        job_events(2, "a", 1.0, 3.0, [0], jobid=9, attempt=2, log="a2.log"),
        job_events(3, "b", 0.0, 1.0, [1]),
    )
    assert (summary.done, summary.failed, summary.attempts) == (2, 0, 3)
    assert summary.failures == []
    assert [(job.attempt, job.log) for job in summary.retried] == [(1, "a1.log")]
    (a,) = [s for s in summary.rules if s.rule == "a"]
    assert (a.jobs, a.attempts, a.failures, a.mean_s, a.max_s) == (1, 2, 0, 1.5, 2.0)
    lines = summary_lines(summary)
    assert lines[0] == (
        "matensemble: 2 job(s) done, 0 failed, 0 cancelled, 0 not started "
        "(3 attempts; 1 failed and were retried)."
    )
    assert "matensemble: retried: a[i=1] attempt 1 (failed): r. Log: a1.log" in lines
    assert not any("matensemble: failed:" in line for line in lines)


def test_a_job_that_failed_every_attempt_counts_once_with_its_last_attempt(tmp_path):
    summary = summary_of(
        tmp_path,
        *(
            job_events(k, "a", k, k + 0.5, [0], status="failed", jobid=4, attempt=k, log=f"{k}")
            for k in (1, 2, 3)
        ),
    )
    assert (summary.done, summary.failed, summary.attempts) == (0, 1, 3)
    assert [(job.attempt, job.log) for job in summary.failures] == [(3, "3")]
    assert [job.attempt for job in summary.retried] == [1, 2]
    (a,) = summary.rules
    assert (a.jobs, a.attempts, a.failures) == (1, 3, 1)
    assert "matensemble: failed: a[i=3] (failed, attempt 3): r. Log: 3" in summary_lines(summary)


def test_outcomes_cancelled_not_started_and_still_running(tmp_path):
    summary = summary_of(
        tmp_path,
        job_events(1, "a", 0.0, 2.0, [0], status="cancelled"),
        job_events(2, "b", None, 2.0, [], status="cancelled"),  # withdrawn
        job_events(3, "c", 0.0, None, [1]),  # still running at the end
        end=False,
    )
    assert (summary.done, summary.failed, summary.cancelled) == (0, 0, 1)
    assert (summary.not_started, summary.unfinished, summary.attempts) == (1, 1, 2)
    assert "1 still running when the journal ends" in summary_lines(summary)[0]


def test_rules_count_only_jobs_that_ran(tmp_path):
    summary = summary_of(
        tmp_path,
        job_events(1, "a", 0.0, 2.0, [0]),
        job_events(2, "a", None, 2.0, [], status="cancelled"),  # withdrawn
        job_events(3, "never", None, 2.0, [], status="cancelled"),
    )
    assert [(s.rule, s.jobs, s.attempts, s.mean_s) for s in summary.rules] == [("a", 1, 1, 2.0)]


def test_an_empty_run(tmp_path):
    summary = summary_of(tmp_path)
    assert (summary.done, summary.makespan_s, summary.lower_bound_s, summary.rules) == (
        0,
        0.0,
        0.0,
        [],
    )
    assert summary_lines(summary) == [
        "matensemble: 0 job(s) done, 0 failed, 0 cancelled, 0 not started."
    ]


def test_resource_lines_name_rank_sets_in_the_cpuset_format(tmp_path):
    from snakemake_executor_plugin_matensemble.observing.summary_text import resource_lines

    path = write_events(
        tmp_path / "journal.jsonl",
        [
            RUN,
            {"event": "resource", "t": 5.0, "kind": "drain", "ranks": [0, 1, 2, 5], "at": 4.0},
            {"event": "resource", "t": 6.0, "kind": "up", "ranks": [3]},
        ],
    )
    lines = [line.split(" ", 2)[2] for line in resource_lines(path)]
    assert lines == ["ranks 0-2,5 drained.", "rank 3 came back."]


def test_snakemakes_verdict_and_refused_attempts_count_as_failed(tmp_path):
    from snakemake_executor_plugin_matensemble.observing.journal import Journal

    journal = Journal(tmp_path / "run")
    journal.write("run", **{k: v for k, v in RUN.items() if k not in {"event", "t"}})
    job = {"rule": "no_output", "wildcards": {}, "jobid": "1", "attempt": 1}
    journal.write("queued", key=1, request={}, log="n.log", **job)
    journal.started(1, "11", None, 10.0)
    journal.ended(1, "finished", "success", end=11.0)
    journal.verdict(1, "failed", "missing output files: no_output.txt")
    journal.refused(2, {**job, "rule": "bad_shell", "jobid": "2"}, "b.log", "no such shell")
    journal.close()
    record = read_journal(journal.path)
    no_output, bad_shell = record.jobs
    assert (no_output.status, no_output.end, no_output.duration()) == ("failed", 11.0, 1.0)
    assert (bad_shell.status, bad_shell.ran) == ("launch_error", False)
    summary = summarize(record)
    assert (summary.done, summary.failed, summary.not_started) == (0, 2, 0)
    assert [job.rule for job in summary.failures] == ["no_output", "bad_shell"]
    lines = summary_lines(summary)
    assert lines[0] == "matensemble: 0 job(s) done, 2 failed, 0 cancelled, 0 not started."
    assert (
        "matensemble: failed: no_output (failed): missing output files: no_output.txt. Log: n.log"
    ) in lines


@pytest.mark.snakemake_independent
def test_the_collector_is_paused_while_summarizing_and_restored_after(tmp_path, monkeypatch):
    import gc

    from snakemake_executor_plugin_matensemble.observing import summary as summary_module

    seen = []
    real = summary_module._summarize
    monkeypatch.setattr(
        summary_module, "_summarize", lambda r: seen.append(gc.isenabled()) or real(r)
    )
    path = write_events(tmp_path / "journal.jsonl", [RUN, *job_events(1, "a", 0.0, 1.0, [0])])
    assert gc.isenabled()
    assert summarize(read_journal(path)).done == 1
    assert (seen, gc.isenabled()) == ([False], True)
    gc.disable()
    try:
        with summary_module.gc_paused():
            pass
        assert not gc.isenabled()  # left as it was found
    finally:
        gc.enable()


@pytest.mark.snakemake_independent
def test_end_of_run_lines_are_the_summary_then_the_resource_changes(tmp_path):
    from snakemake_executor_plugin_matensemble.observing.summary_text import (
        end_of_run_lines,
        resource_lines,
    )

    path = write_events(
        tmp_path / "journal.jsonl",
        [
            RUN,
            *job_events(1, "a", 100.0, 104.0, [0], jobid=1, status="failed", log="a1.log"),
            *job_events(2, "a", 104.0, 105.0, [0], jobid=1, attempt=2),
            *job_events(3, "b", 100.0, 102.0, [1], jobid=2),
            {"event": "resource", "t": 101.0, "kind": "drain", "ranks": [0], "at": 101.0},
        ],
    )
    summary = summarize(read_journal(path))
    assert end_of_run_lines(path) == summary_lines(summary) + resource_lines(path)
    assert (summary.done, summary.attempts, len(summary.retried)) == (2, 3, 1)
    by_rule = {s.rule: (s.jobs, s.attempts, s.mean_s, s.max_s) for s in summary.rules}
    assert by_rule == {"a": (1, 2, 2.5, 4.0), "b": (1, 1, 2.0, 2.0)}
    assert [s.rule for s in summary.rules] == ["a", "b"]  # busiest first: 5 s, then 2 s


@pytest.mark.snakemake_independent
def test_resource_lines_ignore_jobs_that_merely_mention_resource(tmp_path):
    from snakemake_executor_plugin_matensemble.observing.summary_text import (
        resource_lines,
        run_chain,
    )

    path = write_events(
        tmp_path / "journal.jsonl",
        [
            RUN,
            *job_events(1, "resource", 0.0, 1.0, [0], wildcards={"w": "previous"}),
            {"event": "resource", "t": 5.0, "kind": "down", "ranks": [2], "at": 4.0},
        ],
        torn_tail='{"event": "resource", "t": 6.0, "kind": "up", "ra',
    )
    assert [line.split(" ", 2)[2] for line in resource_lines(path)] == ["rank 2 went down."]
    assert run_chain(path) == [path]
