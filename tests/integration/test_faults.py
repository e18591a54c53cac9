"""Fault injection with real snakemake processes: interrupts at random moments,
and jobs that fail in every way a job can fail."""

import base64
import random
import signal
from pathlib import Path

import pytest

from snakemake_executor_plugin_matensemble.observing.journal import read_journal
from snakemake_executor_plugin_matensemble.observing.report import find_journal

from ..helpers import (
    interrupt_snakemake,
    processes_with_marker,
    run_snakemake,
    wait_until,
    write_snakefile,
)

ENSEMBLE = """
rule all:
    input: "total.txt"

rule member:
    output: "members/{{i}}.txt"
    shell:
        "echo started > {{output}}; sleep {marker}; sleep 0.{{wildcards.i}}; "
        "echo {{wildcards.i}} squared is $(( {{wildcards.i}} * {{wildcards.i}} )) > {{output}}"

rule total:
    input: expand("members/{{i}}.txt", i=range(12))
    output: "total.txt"
    shell: "cat {{input}} > {{output}}"
"""


@pytest.fixture(scope="module")
def clean_result(tmp_path_factory) -> dict[str, bytes]:
    workdir = tmp_path_factory.mktemp("clean")
    write_snakefile(workdir, ENSEMBLE.format(marker="0.6"))
    run = run_snakemake(workdir)
    assert run.returncode == 0, run.output
    return {str(p.relative_to(workdir)): p.read_bytes() for p in outputs(workdir)}


def outputs(workdir: Path) -> list[Path]:
    return sorted([*workdir.glob("members/*.txt"), *workdir.glob("total.txt")])


def marked_incomplete(workdir: Path, path: Path) -> bool:
    """Whether Snakemake holds an incomplete marker for output ``path`` (its
    persistence: ``.snakemake/incomplete/<urlsafe base64 of the path>``)."""
    name = base64.urlsafe_b64encode(str(path.relative_to(workdir)).encode()).decode()
    return (workdir / ".snakemake" / "incomplete" / name).exists()


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_interrupt_at_a_random_moment_then_rerun_incomplete(tmp_path, clean_result, seed, signum):
    marker = f"0.6{seed}{int(signum)}"  # a sleep that identifies this run's jobs
    write_snakefile(tmp_path, ENSEMBLE.format(marker=marker))
    process = interrupt_snakemake(
        tmp_path,
        ready=lambda: bool(processes_with_marker(f"sleep {marker}")),
        signum=signum,
        log=tmp_path / "first.log",
        delay=random.Random(seed).uniform(0.1, 2.5),
    )
    first = (tmp_path / "first.log").read_text()
    if signum != signal.SIGKILL:
        assert process.returncode != 0, first
        # stopped at once: nothing of the run is left
        assert not processes_with_marker(f"sleep {marker}"), first
        assert not processes_with_marker(str(tmp_path)), first
    else:
        # the guard stops the jobs of a killed snakemake within its grace period
        assert wait_until(lambda: not processes_with_marker(f"sleep {marker}"), 20)
        assert run_snakemake(tmp_path, "--unlock").returncode == 0
    # What Snakemake recorded as complete must be kept; what it marked incomplete
    # must be redone, even if the job wrote its whole output after snakemake
    # stopped (a job that ends between SIGKILL and the orphan guard's signal).
    before = {p: p.stat().st_mtime_ns for p in outputs(tmp_path)}
    incomplete = {p for p in before if marked_incomplete(tmp_path, p)}
    complete = {p for p in before if p not in incomplete}
    for path in complete:
        assert b"squared" in path.read_bytes(), f"{path} is partial but not marked incomplete"
    rerun = run_snakemake(tmp_path, "--rerun-incomplete")
    assert rerun.returncode == 0, rerun.output
    result = {str(p.relative_to(tmp_path)): p.read_bytes() for p in outputs(tmp_path)}
    assert result == clean_result
    for path in complete:
        assert path.stat().st_mtime_ns == before[path], f"{path} was rerun needlessly"
    for path in incomplete:
        assert path.stat().st_mtime_ns != before[path], f"incomplete {path} was not rerun"
    # the interrupted run's journal is readable, whatever the signal
    assert read_journal(find_journal(tmp_path / ".snakemake/matensemble")).jobs


FAULTS = """
rule all:
    input:
        expand("good/{i}.txt", i=range(3)),
        "signalled.txt", "missing_program.txt", "bad_shell.txt", "no_output.txt"

rule good:
    output: "good/{i}.txt"
    shell: "echo fine > {output}"

rule signalled:
    output: "signalled.txt"
    shell: "kill -SEGV $$"

rule missing_program:
    output: "missing_program.txt"
    shell: "this-program-does-not-exist --flag > {output}"

rule bad_shell:
    output: "bad_shell.txt"
    resources: shell_exec="/no/such/shell"
    shell: "touch {output}"

rule no_output:
    output: "no_output.txt"
    shell: "echo forgot to write the output"
"""


def test_every_kind_of_job_fault_is_reported_and_others_finish(tmp_path):
    write_snakefile(tmp_path, FAULTS)
    run = run_snakemake(tmp_path, "--keep-going", "--latency-wait", "1")
    assert run.returncode != 0
    for i in range(3):
        assert (tmp_path / f"good/{i}.txt").read_text() == "fine\n"
    out = run.output
    assert "signalled was killed by SIGSEGV (11)" in out
    assert "missing_program exited with code 127" in out
    missing_log = tmp_path / ".snakemake/matensemble_logs/rule_missing_program/attempt1.log"
    assert "this-program-does-not-exist: command not found" in missing_log.read_text()
    # Snakemake's own check, as with --cores N: the job is refused before launch
    assert "Cannot set shell to /no/such/shell because it does not exist." in out
    # Snakemake's own verdict on the missing output (worded per release)
    assert "MissingOutputException in rule no_output" in out or (
        "Error in rule no_output" in out and "Missing output files" in out
    )
    statuses = {
        job.rule: job.status
        for job in read_journal(find_journal(tmp_path / ".snakemake/matensemble")).jobs
    }
    assert statuses["signalled"] == "failed"
    assert statuses["missing_program"] == "failed"
    assert statuses["good"] == "success"


def test_a_job_refused_before_launch_is_counted_as_failed(tmp_path):
    write_snakefile(
        tmp_path,
        """
        rule bad_shell:
            output: "bad_shell.txt"
            resources: shell_exec="/no/such/shell"
            shell: "touch {output}"
        """,
    )
    run = run_snakemake(tmp_path)
    assert run.returncode != 0
    assert "matensemble: 0 job(s) done, 1 failed" in run.output
    (job,) = read_journal(find_journal(tmp_path / ".snakemake/matensemble")).jobs
    assert (job.rule, job.status) == ("bad_shell", "launch_error")
