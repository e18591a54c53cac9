"""Living inside a real allocation (issue 14), against real Flux: its end,
drained ranks, lost ranks. Skipped, with the reason, where Flux is absent.

Each test starts its own ``flux start --test-size=N`` instance; the allocation's
end is a nested ``flux alloc -N1 -t <short>`` inside it.
"""

import json
import shlex
import sys
from pathlib import Path

import pytest

from ..helpers import write_snakefile
from .fluxenv import requires_flux, run_in_flux, scheduler_params
from .scripts import DUMP, interrupt_script, snakemake_command

pytestmark = [requires_flux, pytest.mark.flux]

SCHEDULERS = scheduler_params()


def flux_jobs(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def ranks_of(text: str) -> set[int]:
    out: set[int] = set()
    for part in str(text).strip("[]").split(","):
        if part:
            low, _, high = part.partition("-")
            out.update(range(int(low), int(high or low) + 1))
    return out


def journal_events(workdir: Path) -> list[list[dict]]:
    """Every run journal under workdir, oldest first, as lists of events."""
    paths = sorted((workdir / ".snakemake/matensemble").glob("*/journal.jsonl"))
    return [[json.loads(line) for line in p.read_text().splitlines() if line] for p in paths]


def finished_labels(events: list[dict]) -> set[str]:
    queued = {
        e["key"]: json.dumps(e.get("wildcards"), sort_keys=True)
        for e in events
        if e["event"] == "queued"
    }
    return {queued[e["key"]] for e in events if e["event"] == "finished" and e["key"] in queued}


ENDING_WORKFLOW = """
rule all:
    input: expand("out/{i}.txt", i=range(24))

rule step:
    output: "out/{i}.txt"
    resources: runtime=1
    shell: "sleep 8; echo step {wildcards.i} > {output}"
"""


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_allocation_end_no_job_killed_and_the_resume_command_finishes_the_work(tmp_path, scheduler):
    """In ``flux alloc -t 120s`` 24 jobs of 8 s that declare runtime=1 (60 s)
    on 2 cores: with a 5-s margin, jobs may start only in the first 55 s (less
    snakemake's start-up). The run stops starting them, lets running ones
    finish, exits with the resume command; that command, run in a new
    allocation, finishes the rest with identical outputs and reruns nothing."""
    write_snakefile(tmp_path, ENDING_WORKFLOW)
    first = snakemake_command(
        "--matensemble-flux-reserve-cores", "0", "--matensemble-deadline-margin", "5"
    )
    dump = f"{shlex.quote(sys.executable)} {DUMP}"
    inner1 = f"{first} > first.log 2>&1; echo $? > rc1.txt; {dump} jobs1.json"
    inner2 = f"$cmd > second.log 2>&1; echo $? > rc2.txt; {dump} jobs2.json"
    script = [
        "bash",
        "-c",
        f"flux alloc -N1 -t 120s bash -c {shlex.quote(inner1)}; "
        "cmd=$(grep -A1 'Resume in the next allocation with:' first.log | tail -1); "
        'echo "$cmd" > resume.txt; export cmd; ls out > done1.txt; '
        f"flux alloc -N1 -t 300s bash -c {shlex.quote(inner2)}",
    ]
    process = run_in_flux(script, cwd=tmp_path, size=1, timeout=400, scheduler=scheduler)
    first_log = (tmp_path / "first.log").read_text()
    assert process.returncode == 0, process.stdout + first_log
    # first allocation: stopped early, said why and how to go on
    assert int((tmp_path / "rc1.txt").read_text()) != 0, first_log
    assert "cannot finish before then and are not started" in first_log, first_log
    resume = (tmp_path / "resume.txt").read_text().strip()
    assert "-m snakemake --executor matensemble" in resume
    assert resume.endswith("--rerun-incomplete")
    done_first = set((tmp_path / "done1.txt").read_text().split())
    assert 0 < len(done_first) < 24, first_log
    # no job was killed by the allocation's end: every Flux job of both
    # allocations completed
    jobs1 = flux_jobs(tmp_path / "jobs1.json")
    jobs2 = flux_jobs(tmp_path / "jobs2.json")
    assert len(jobs1) == len(done_first)
    assert len(jobs1) + len(jobs2) == 24
    assert all(job["result"] == "COMPLETED" for job in jobs1 + jobs2), jobs1 + jobs2
    journals = journal_events(tmp_path)
    assert len(journals) == 2
    for events in journals:
        ends = [e for e in events if e["event"] in ("finished", "failed")]
        assert all(e["status"] == "success" for e in ends), ends
    # second allocation: finished the rest, reran nothing
    second_log = (tmp_path / "second.log").read_text()
    assert int((tmp_path / "rc2.txt").read_text()) == 0, second_log
    for i in range(24):
        assert (tmp_path / f"out/{i}.txt").read_text() == f"step {i}\n"
    assert not finished_labels(journals[0]) & finished_labels(journals[1])
    assert len(finished_labels(journals[0]) | finished_labels(journals[1])) == 24
    assert len(finished_labels(journals[0])) == len(done_first)


DRAIN_WORKFLOW = """
rule all:
    input: expand("out/{i}.txt", i=range(24))

rule step:
    output: "out/{i}.txt"
    shell: "sleep 2; echo {wildcards.i} > {output}"
"""


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_drained_rank_gets_no_new_jobs_and_undrain_brings_it_back(tmp_path, scheduler):
    write_snakefile(tmp_path, DRAIN_WORKFLOW)
    script = interrupt_script(
        snakemake_command("--matensemble-flux-reserve-cores", "0"),
        running=3,
        action="flux resource drain 1 'test drain'; date +%s.%N > drained_at; sleep 6; "
        "date +%s.%N > undrained_at; flux resource undrain 1",
    )
    process = run_in_flux(script, cwd=tmp_path, size=2, timeout=240, scheduler=scheduler)
    log = (tmp_path / "snakemake.log").read_text()
    assert process.returncode == 0, process.stdout + log
    assert int((tmp_path / "rc.txt").read_text()) == 0, log
    assert len(list((tmp_path / "out").glob("*.txt"))) == 24
    drained = float((tmp_path / "drained_at").read_text())
    undrained = float((tmp_path / "undrained_at").read_text())
    ran = [job for job in flux_jobs(tmp_path / "flux-jobs.json") if job.get("t_run")]
    on_rank1 = [job for job in ran if 1 in ranks_of(job["ranks"])]
    during = [job for job in on_rank1 if drained < job["t_run"] < undrained]
    assert not during, f"jobs started on the drained rank: {during}"
    assert any(job["t_run"] > undrained for job in on_rank1), "rank 1 was not used again"
    assert all(job["result"] == "COMPLETED" for job in ran)
    assert "drained: test drain" in log
    assert "undrained; jobs start there again" in log


LOST_WORKFLOW = """
rule all:
    input: expand("out/{i}.txt", i=range(8))

rule step:
    output: "out/{i}.txt"
    shell: "sleep 5; echo {wildcards.i} > {output}"
"""


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_lost_rank_jobs_are_reported_lost_and_retried_on_the_other_rank(tmp_path, scheduler):
    write_snakefile(tmp_path, LOST_WORKFLOW)
    script = interrupt_script(
        snakemake_command("--matensemble-flux-reserve-cores", "0", "--retries", "1"),
        running=4,
        action="pid1=$(flux exec -r 1 flux getattr broker.pid); date +%s.%N > lost_at; "
        "kill -9 $pid1",
        dump=None,
    )
    # (by default flux start tears the whole instance down 20 s after any of
    # its brokers exits; a real allocation goes on without the lost node)
    process = run_in_flux(
        script,
        cwd=tmp_path,
        size=2,
        timeout=240,
        scheduler=scheduler,
        options=("--test-exit-mode=leader",),
    )
    log = (tmp_path / "snakemake.log").read_text()
    assert int((tmp_path / "rc.txt").read_text()) == 0, process.stdout + log
    for i in range(8):
        assert (tmp_path / f"out/{i}.txt").read_text() == f"{i}\n"
    assert "was lost with its node" in log or "was lost: its node" in log, log
    assert "went down" in log, log
    lost_at = float((tmp_path / "lost_at").read_text())
    # what ran where, from the run's journal (Flux's job list is not read: a
    # dead rank may make that fail)
    (events,) = journal_events(tmp_path)
    ranks = {
        e["key"]: {p["rank"] for p in e["placement"]} for e in events if e["event"] == "started"
    }
    starts = {e["key"]: e["start"] for e in events if e["event"] == "started"}
    failed = [e for e in events if e["event"] == "failed"]
    assert failed, "no job ran on the lost rank"
    assert all("lost" in e["reason"] for e in failed), failed
    # those that had started ran on the lost rank (a job Flux had accepted but
    # not yet started there, e.g. submitted ahead, fails as lost too)
    assert all(ranks[e["key"]] == {1} for e in failed if e["key"] in ranks)
    later = [key for key, start in starts.items() if start > lost_at + 1.0]
    assert later, "nothing was retried"
    assert all(ranks[key] == {0} for key in later)
