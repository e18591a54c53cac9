"""Real snakemake runs with --executor matensemble on the local backend."""

import os
import signal
import time
from pathlib import Path

import pytest

from snakemake_executor_plugin_matensemble.cpulist import parse_cpu_list
from snakemake_executor_plugin_matensemble.observing.journal import read_journal
from snakemake_executor_plugin_matensemble.observing.report import find_journal, make_report

from ..helpers import (
    interrupt_snakemake,
    processes_with_marker,
    run_snakemake,
    wait_until,
    write_snakefile,
)

CPUS = sorted(os.sched_getaffinity(0))


def read_intervals(directory: Path) -> list[dict]:
    """Each job wrote 'start end cpus threads gpus' into its output."""
    records = []
    for path in sorted(directory.glob("*.txt")):
        start, end, cpus, threads, *gpus = path.read_text().split()
        records.append(
            {
                "name": path.stem,
                "start": float(start),
                "end": float(end),
                "cpus": set(parse_cpu_list(cpus)),
                "threads": int(threads),
                "gpus": gpus[0] if gpus else "",
            }
        )
    return records


def overlapping(records: list[dict]):
    for i, a in enumerate(records):
        for b in records[i + 1 :]:
            if a["start"] < b["end"] and b["start"] < a["end"]:
                yield a, b


RECORD = (
    "start=$(date +%s.%N); cpus=$(grep Cpus_allowed_list /proc/self/status | cut -f2); "
    "sleep {params.sleep}; "
    'echo "$start $(date +%s.%N) $cpus {threads} ${{CUDA_VISIBLE_DEVICES:-none}}" > {output}'
)


PATHS = {
    "direct": (),
    "per-job": ("--matensemble-per-job-snakemake",),
}


@pytest.mark.parametrize("path", PATHS)
def test_hello_world(tmp_path, path):
    write_snakefile(
        tmp_path,
        """
        rule all:
            input: expand("hello/{name}.txt", name=["world", "flux"])

        rule hello:
            output: "hello/{name}.txt"
            shell: "echo hello {wildcards.name} | tee {output}"
        """,
    )
    run = run_snakemake(tmp_path, *PATHS[path])
    assert run.returncode == 0, run.output
    assert (tmp_path / "hello/world.txt").read_text() == "hello world\n"
    assert (tmp_path / "hello/flux.txt").read_text() == "hello flux\n"
    assert "matensemble: local backend" in run.output
    if path == "direct":
        assert "rule hello (shell) runs its command directly" in run.output
    else:
        assert "hello runs through a per-job Snakemake process" in run.output
    log = tmp_path / ".snakemake/matensemble_logs/rule_hello/name=world/attempt1.log"
    assert "hello world" in log.read_text()
    # a second run has nothing to do
    again = run_snakemake(tmp_path, *PATHS[path])
    assert again.returncode == 0
    assert "Nothing to be done" in again.output


def test_mixed_threads_never_oversubscribe_the_cores(tmp_path):
    write_snakefile(
        tmp_path,
        f"""
        rule all:
            input: expand("out/{{i}}.txt", i=range(30))

        rule work:
            output: "out/{{i}}.txt"
            threads: lambda wc: 1 + int(wc.i) % {len(CPUS)}
            params: sleep=0.2
            shell: '{RECORD}'
        """,
    )
    run = run_snakemake(tmp_path, timeout=400)
    assert run.returncode == 0, run.output
    records = read_intervals(tmp_path / "out")
    assert len(records) == 30
    for record in records:
        # each job ran on exactly as many CPUs as it asked for
        assert len(record["cpus"]) == record["threads"], record
        assert record["cpus"] <= set(CPUS)
    for a, b in overlapping(records):
        assert not (a["cpus"] & b["cpus"]), f"{a['name']} and {b['name']} shared CPUs"
    assert any(True for _ in overlapping(records)) or len(CPUS) == 1, "nothing ran in parallel"


def test_gpu_jobs_see_exactly_their_own_gpu(tmp_path):
    write_snakefile(
        tmp_path,
        f"""
        rule all:
            input: expand("out/{{i}}.txt", i=range(6))

        rule gpu_job:
            output: "out/{{i}}.txt"
            resources: gpu=1
            params: sleep=1
            shell: '{RECORD}'
        """,
    )
    run = run_snakemake(tmp_path, "--matensemble-local-gpus", "2")
    assert run.returncode == 0, run.output
    records = read_intervals(tmp_path / "out")
    assert len(records) == 6
    assert all(r["gpus"] in {"0", "1"} for r in records), records
    for a, b in overlapping(records):
        assert a["gpus"] != b["gpus"], f"{a['name']} and {b['name']} shared a GPU"
    times = sorted({r["start"] for r in records})
    for t in times:
        assert sum(r["start"] <= t < r["end"] for r in records) <= 2


@pytest.mark.parametrize("path", PATHS)
def test_failing_job_is_reported_and_others_finish_with_keep_going(tmp_path, path):
    write_snakefile(
        tmp_path,
        """
        rule all:
            input: expand("out/{i}.txt", i=range(4))

        rule work:
            output: "out/{i}.txt"
            shell:
                "if [ {wildcards.i} = 2 ]; then echo broken-input >&2; exit 3; fi; "
                "touch {output}"
        """,
    )
    run = run_snakemake(tmp_path, "--keep-going", *PATHS[path])
    assert run.returncode != 0
    for i in (0, 1, 3):
        assert (tmp_path / f"out/{i}.txt").exists()
    assert not (tmp_path / "out/2.txt").exists()
    assert "Error in rule work" in run.output
    log = ".snakemake/matensemble_logs/rule_work/i=2/attempt1.log"
    assert log in run.output
    text = (tmp_path / log).read_text()
    assert "broken-input" in text
    if path == "direct":
        assert "work[i=2] exited with code 3" in run.output
    else:  # the per-job Snakemake process exits 1 and logs the command's status
        assert "work[i=2] exited with code 1" in run.output
        assert "exit status 3" in text


@pytest.mark.parametrize("order", ["longest-first", "arrival"])
def test_queue_order_decides_among_equal_priority(tmp_path, order):
    """On one core jobs run one at a time: by default the longest declared
    runtime first (LPT); with --matensemble-order arrival, as handed over."""
    write_snakefile(
        tmp_path,
        """
        rule all:
            input: expand("out/{m}.txt", m=[1, 5, 3, 2])

        rule work:
            output: "out/{m}.txt"
            resources: runtime=lambda wc: int(wc.m)
            shell: "touch {output}"
        """,
    )
    args = ["--matensemble-local-cores", "1"]
    if order != "longest-first":  # the default
        args += ["--matensemble-order", order]
    run = run_snakemake(tmp_path, *args)
    assert run.returncode == 0, run.output
    assert f"order {order}." in run.output
    jobs = read_journal(find_journal(tmp_path / ".snakemake/matensemble")).jobs
    by_start = sorted(jobs, key=lambda j: j.start)
    if order == "longest-first":
        assert [j.wildcards["m"] for j in by_start] == ["5", "3", "2", "1"]
    else:
        assert [j.key for j in by_start] == sorted(j.key for j in jobs)


def test_the_matensemble_scheduler_plugin_runs_a_workflow(tmp_path):
    """``--scheduler matensemble`` (docs/performance.md, large ensembles): every
    ready job handed over at once, the same files as Snakemake's own selector."""
    pytest.importorskip(  # scheduler plugins came with Snakemake 9.10
        "snakemake.scheduling.greedy",
        reason="this Snakemake has no scheduler plugins (--scheduler takes no plugin)",
    )
    write_snakefile(
        tmp_path,
        """
        rule all:
            input: "sum.txt"

        rule member:
            output: "members/{i}.txt"
            priority: lambda wc: int(wc.i) % 3
            shell: "echo {wildcards.i} > {output}"

        rule total:
            input: expand("members/{i}.txt", i=range(40))
            output: "sum.txt"
            shell: "awk '{{s += $1}} END {{print s}}' {input} > {output}"
        """,
    )
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    (command,) = [c for c in readme.splitlines() if c.endswith("--scheduler matensemble")]
    words = command.split()
    assert words[:5] == ["snakemake", "--executor", "matensemble", "-j", "unlimited"]
    run = run_snakemake(tmp_path, *words[5:])  # the README's command, word for word
    assert run.returncode == 0, run.output
    assert (tmp_path / "sum.txt").read_text() == f"{sum(range(40))}\n"
    # all 40 members were handed over in one selection
    assert "Execute 40 jobs..." in run.output


def test_a_large_hand_over_starts_jobs_while_the_rest_is_prepared(tmp_path):
    """Snakemake hands 1,500 jobs over in one call; the first ones start before
    the last ones are prepared (the executor hands batches to the dispatcher)."""
    write_snakefile(
        tmp_path,
        """
        rule all:
            input: expand("out/{i}.txt", i=range(1500))

        rule member:
            output: "out/{i}.txt"
            shell: "touch {output}"
        """,
    )
    run = run_snakemake(tmp_path, "--max-jobs-per-timespan", "1000000/1s", "--quiet", "all")
    assert run.returncode == 0, run.output
    jobs = read_journal(find_journal(tmp_path / ".snakemake/matensemble")).jobs
    assert len(jobs) == 1500
    first_start = min(j.start for j in jobs)
    last_prepared = max(j.queued for j in jobs)
    assert first_start < last_prepared, (first_start, last_prepared)


def test_without_keep_going_queued_jobs_do_not_start_after_a_failure(tmp_path):
    write_snakefile(
        tmp_path,
        """
        rule all:
            input: "first.txt", expand("later/{i}.txt", i=range(20))

        rule first:
            output: "first.txt"
            priority: 10
            threads: 2
            shell: "exit 1"

        rule later:
            output: "later/{i}.txt"
            shell: "touch {output}"
        """,
    )
    run = run_snakemake(tmp_path, "--matensemble-local-cores", "2", "--matensemble-policy", "fifo")
    assert run.returncode != 0
    assert "queued job(s) were not started" in run.output
    assert not list((tmp_path / "later").glob("*.txt"))
    # the withdrawn jobs are "not started", and the rule tables list only jobs that ran
    assert "matensemble: 0 job(s) done, 1 failed, 0 cancelled, 20 not started." in run.output
    report = make_report(tmp_path / ".snakemake/matensemble")
    rules = (report / "rules.md").read_text()
    assert "| first | 1 | 1 |" in rules
    assert "later" not in rules


def test_retries_get_a_new_log_and_attempt_dependent_resources(tmp_path):
    write_snakefile(
        tmp_path,
        """
        rule flaky:
            output: "flaky.txt"
            resources: runtime=lambda wc, attempt: 10 * attempt
            shell:
                "echo attempt {resources.runtime} >&2; [ {resources.runtime} = 20 ]; "
                "echo {resources.runtime} > {output}"
        """,
    )
    run = run_snakemake(tmp_path, "--retries", "1")
    assert run.returncode == 0, run.output
    assert (tmp_path / "flaky.txt").read_text() == "20\n"
    logs = tmp_path / ".snakemake/matensemble_logs/rule_flaky"
    assert "attempt 10" in (logs / "attempt1.log").read_text()
    assert "attempt 20" in (logs / "attempt2.log").read_text()


@pytest.mark.slow
@pytest.mark.snakemake_independent
def test_job_over_its_runtime_is_killed_and_reported_as_timeout(tmp_path):
    write_snakefile(
        tmp_path,
        """
        rule slow:
            output: "slow.txt"
            resources: runtime=1
            shell: "sleep 600; touch {output}"
        """,
    )
    started = time.time()
    run = run_snakemake(tmp_path, "--matensemble-kill-grace-seconds", "2", timeout=200)
    assert run.returncode != 0
    assert "exceeded its runtime of 1 min" in run.output
    assert time.time() - started < 120
    assert not (tmp_path / "slow.txt").exists()


def test_threads_above_the_machine_are_lowered_as_cores_lowers_them(tmp_path):
    write_snakefile(
        tmp_path,
        """
        rule wide:
            output: "wide.txt"
            threads: 4096
            shell: "echo {threads} $OMP_NUM_THREADS > {output}"
        """,
    )
    run = run_snakemake(tmp_path, "--matensemble-local-cores", "2")
    assert run.returncode == 0, run.output
    assert (tmp_path / "wide.txt").read_text() == "2 2\n"
    assert "threads lowered to 2" in run.output
    assert "wide (threads: 4096)" in run.output


def test_job_larger_than_the_machine_fails_at_once_before_anything_runs(tmp_path):
    write_snakefile(
        tmp_path,
        """
        rule all:
            input: "small.txt", "huge.txt"

        rule small:
            output: "small.txt"
            shell: "touch {output}"

        rule huge:
            output: "huge.txt"
            resources: cpus_per_task=4096
            shell: "touch {output}"
        """,
    )
    started = time.time()
    run = run_snakemake(tmp_path)
    assert run.returncode != 0
    assert time.time() - started < 30
    assert "rule 'huge'" in run.output
    assert "cpus_per_task=4096" in run.output
    assert "more cores than any node has" in run.output
    assert "Fix:" in run.output
    assert not (tmp_path / "small.txt").exists(), "a job started before the error"


def test_bad_resource_value_fails_before_anything_runs(tmp_path):
    write_snakefile(
        tmp_path,
        """
        rule all:
            input: "a.txt", "b.txt"

        rule a:
            output: "a.txt"
            shell: "touch {output}"

        rule b:
            output: "b.txt"
            resources: gpu=3, tasks=2
            shell: "touch {output}"
        """,
    )
    run = run_snakemake(tmp_path, "--matensemble-local-gpus", "4")
    assert run.returncode != 0
    assert "rule 'b'" in run.output
    assert "gpu=3" in run.output
    assert "cannot be split evenly among tasks=2" in run.output
    assert not (tmp_path / "a.txt").exists()


SLEEPY = """
rule all:
    input: expand("out/{{i}}.txt", i=range(6))

rule sleepy:
    output: "out/{{i}}.txt"
    shell: "sleep {marker}; touch {{output}}"
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_leaves_no_job_process(tmp_path, signum):
    marker = f"3{signum}.271828"
    write_snakefile(tmp_path, SLEEPY.format(marker=marker))
    process = interrupt_snakemake(
        tmp_path,
        ready=lambda: bool(processes_with_marker(f"sleep {marker}")),
        signum=signum,
        log=tmp_path / "run.log",
    )
    output = (tmp_path / "run.log").read_text()
    assert process.returncode != 0
    assert wait_until(lambda: not processes_with_marker(f"sleep {marker}"), 5), output
    assert not processes_with_marker(str(tmp_path)), "a per-job snakemake survived"
    assert not list((tmp_path / "out").glob("*.txt"))


def test_kill_9_then_rerun_incomplete_gives_the_clean_result(tmp_path):
    snakefile = """
    rule all:
        input: "sum.txt"

    rule part:
        output: "parts/{i}.txt"
        shell: "echo partial > {output}; sleep 2.7182; echo {wildcards.i} > {output}"

    rule total:
        input: expand("parts/{i}.txt", i=range(8))
        output: "sum.txt"
        shell: "cat {input} > {output}"
    """
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    write_snakefile(clean, snakefile)
    write_snakefile(killed, snakefile)
    assert run_snakemake(clean).returncode == 0
    interrupt_snakemake(
        killed,
        ready=lambda: len(list(killed.glob("parts/*.txt"))) >= 2,
        signum=signal.SIGKILL,
        log=killed / "run.log",
    )
    # the orphan guard stops what was running
    assert wait_until(lambda: not processes_with_marker("sleep 2.7182"), 15)
    # the killed run's journal is still readable
    report = make_report(killed / ".snakemake/matensemble")
    assert (report / "timeline.png").exists()
    killed_jobs = read_journal(find_journal(killed / ".snakemake/matensemble")).jobs
    assert any(job.status == "unfinished" and job.ran for job in killed_jobs)
    unlock = run_snakemake(killed, "--unlock")
    assert unlock.returncode == 0, unlock.output
    rerun = run_snakemake(killed, "--rerun-incomplete")
    assert rerun.returncode == 0, rerun.output
    for path in ["sum.txt", *[f"parts/{i}.txt" for i in range(8)]]:
        assert (killed / path).read_bytes() == (clean / path).read_bytes(), path


def test_unknown_policy_is_refused(tmp_path):
    write_snakefile(tmp_path, 'rule a:\n    output: "a"\n    shell: "touch {output}"\n')
    run = run_snakemake(tmp_path, "--matensemble-policy", "random")
    assert run.returncode != 0
    assert "invalid choice: 'random'" in run.output  # not only the echoed command line
    assert not (tmp_path / "a").exists()
