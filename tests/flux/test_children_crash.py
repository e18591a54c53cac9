"""Crash safety with child Flux instances, under real Flux and real snakemake
processes: a child broker killed mid-run, Snakemake killed with SIGKILL and
restarted (with and without --rerun-incomplete), and Snakemake stopped by
SIGTERM. Children must change none of what tests/flux/test_crash.py
shows for one instance: no job lost, none run twice, none left running.

One test instance of 4 brokers (2 declared cores each) serves the whole
module; each test runs in its own workdir with ``--matensemble-flux-children
2`` (children of 2 ranks: c0 on ranks 0-1, c1 on ranks 2-3). Every job traps
SIGTERM and takes ``STOP_SECONDS`` to stop. Each execution of a job stamps its
own start and, when it completes, its end in ``exec.log``, with its process
id; at its start it looks whether an earlier execution of the same job is
still alive and stamps ``double`` if so. A child's keeper SIGKILLs what is
left of the child's jobs after a short grace, so an execution that was killed
stamps no end: that it was gone before its rerun started is what ``double``
checks, and that nothing is left at the end, its process id.

Cost: 6 snakemake runs with 2 children each (a child starts in 2-10 s here),
about 2.5 min on 2 shared cores, most of it Snakemake's and the children's
start-up.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from snakemake_executor_plugin_matensemble.observing.journal import read_journal
from snakemake_executor_plugin_matensemble.observing.summary import by_job

from ..helpers import SNAKEMAKE, pid_alive, wait_until, write_snakefile
from .fluxenv import flux_command, flux_env, requires_flux
from .scripts import declared_resources

pytestmark = [requires_flux, pytest.mark.flux]

#: Brokers of the instance, declared cores of each, seconds a job takes to stop.
BROKERS, CORES, STOP_SECONDS = 4, 2, 3
JOBS = 6

#: One job: stamps ``double`` if an earlier execution of it still lives, then
#: ``start``; waits for ``release``; writes its output; stamps ``end``.
WORK = (
    "trap 'sleep STOP; echo stop NAME $$ $(date +%s.%N) >> exec.log; exit 143' TERM; "
    "mkdir -p pids; for p in pids/NAME.*; do "
    "( [ -e $p ] && kill -0 ${{p##*.}} 2>/dev/null && echo double NAME $$ >> exec.log ) || true; "
    "done; touch pids/NAME.$$; echo start NAME $$ $(date +%s.%N) >> exec.log; "
    "while [ ! -e release ]; do sleep 0.1; done; sleep 0.3; "
    "echo {wildcards.i} > {output}; echo end NAME $$ $(date +%s.%N) >> exec.log"
).replace("STOP", str(STOP_SECONDS))

SNAKEFILE = f"""
rule all:
    input: expand("out/{{i}}.txt", i=range({JOBS}))

rule work:
    output: "out/{{i}}.txt"
    shell: "{WORK.replace("NAME", "work{wildcards.i}")}"
"""


@dataclass(frozen=True)
class Instance:
    """The module's Flux instance: the environment that reaches it."""

    env: dict[str, str]

    def flux(self, *args: str) -> str:
        done = subprocess.run(
            [flux_command() or "flux", *args], env=self.env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def active(self) -> list[str]:
        """Every active job of the instance (children included): ``name state``."""
        return self.flux("jobs", "-n", "-o", "{name} {state}").split("\n")[:-1]

    def child_jobs(self) -> dict[str, str]:
        """Active child instances, by name: their Flux job id."""
        out = self.flux("jobs", "-n", "-o", "{name} {id}")
        prefix = "matensemble-child-"
        return {
            name.removeprefix(prefix): jobid
            for name, jobid in (line.split() for line in out.splitlines())
            if name.startswith(prefix)
        }


@pytest.fixture(scope="module")
def instance(tmp_path_factory) -> Instance:
    """One instance of 4 brokers for the module (a few seconds saved per test)."""
    root = tmp_path_factory.mktemp("children-crash-instance")
    uri, stop = root / "uri", root / "stop"
    command = [
        flux_command() or "flux",
        "start",
        f"--test-size={BROKERS}",
        *declared_resources(root, f"node[0-{BROKERS - 1}]", CORES),
        "bash",
        "-c",
        f"echo $FLUX_URI > {uri}; while [ ! -e {stop} ]; do sleep 0.2; done",
    ]
    with open(root / "flux.log", "w") as log:
        process = subprocess.Popen(
            command,
            cwd=root,
            env=flux_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        assert wait_until(lambda: uri.exists() and uri.read_text().strip(), 60), (
            root / "flux.log"
        ).read_text()
        yield Instance(flux_env({"FLUX_URI": uri.read_text().strip()}))
    finally:
        stop.touch()  # the initial program ends: the instance shuts down
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(autouse=True)
def instance_left_usable(instance):
    """After each test (which asserts that nothing of it is left active): nothing
    a failed test left runs on into the next, and every rank is up and not drained."""
    yield
    if instance.active():
        instance.flux("cancel", "--all")
        assert wait_until(lambda: not instance.active(), 60), instance.active()
    status = instance.flux("resource", "status", "-n", "-o", "{state} {ranks} {reason}")
    assert status.split()[:2] == ["avail", f"0-{BROKERS - 1}"], status


def start(instance: Instance, workdir: Path, log: str, *args: str) -> subprocess.Popen:
    """A snakemake with 2 children in ``workdir`` (its own session: a signal to
    it reaches it alone, as a kill of one process on a login node would)."""
    command = [
        *SNAKEMAKE,
        "--executor",
        "matensemble",
        "-j",
        "unlimited",
        "--matensemble-flux-children",
        "2",
        *args,
    ]
    with open(workdir / log, "w") as stream:
        return subprocess.Popen(
            command,
            cwd=workdir,
            env=instance.env,
            stdout=stream,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def finish(process: subprocess.Popen, timeout: float = 120) -> int:
    try:
        return process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def stamps(workdir: Path) -> list[list[str]]:
    path = workdir / "exec.log"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def started(workdir: Path) -> int:
    return sum(stamp[0] == "start" for stamp in stamps(workdir))


def assert_once_each_and_nothing_left(workdir: Path) -> None:
    """No execution began while another of its job lived; every job completed
    exactly once and wrote its output; no execution is alive now."""
    found = stamps(workdir)
    assert [s for s in found if s[0] == "double"] == [], found
    ends = Counter(s[1] for s in found if s[0] == "end")
    assert ends == {f"work{i}": 1 for i in range(JOBS)}, found
    for i in range(JOBS):
        assert (workdir / "out" / f"{i}.txt").read_text().strip() == str(i)
    alive = [s for s in found if s[0] == "start" and pid_alive(int(s[2]))]
    assert alive == [], f"executions still running: {alive}"


def journal(workdir: Path):
    paths = sorted((workdir / ".snakemake" / "matensemble").glob("*/journal.jsonl"))
    return read_journal(paths[-1])


def test_a_killed_child_broker_loses_no_job_and_doubles_none(instance, tmp_path):
    """kill -9 of c1's broker on its second rank while jobs run in both children:
    c1's jobs fail once with the reason, --retries 1 reruns them on c0 (never
    beside an execution that still lives), the run completes."""
    write_snakefile(tmp_path, SNAKEFILE)
    process = start(instance, tmp_path, "run.log", "--retries", "1")
    try:
        assert wait_until(lambda: started(tmp_path) >= JOBS, 90), (tmp_path / "run.log").read_text()
        child = instance.child_jobs()["c1"]
        uri = instance.flux("uri", "--local", child).strip()
        pid = subprocess.run(
            [flux_command() or "flux", "exec", "-r", "1", "flux", "getattr", "broker.pid"],
            env={**instance.env, "FLUX_URI": uri},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        os.kill(int(pid), signal.SIGKILL)
        log = tmp_path / "run.log"
        # released once c1 is gone: its jobs still waited then, so any retry that
        # started beside one of them stamped "double"
        assert wait_until(lambda: "c1" not in instance.child_jobs(), 60), log.read_text()
        (tmp_path / "release").touch()
        assert finish(process) == 0, log.read_text()
    finally:
        (tmp_path / "release").touch()
        finish(process)
    text = (tmp_path / "run.log").read_text()
    assert "child Flux instance c1 (ranks 2-3) was lost" in text, text
    assert_once_each_and_nothing_left(tmp_path)
    # the journal says which jobs ran in c1: each failed once with the loss, then
    # succeeded elsewhere
    lost = [job for job in by_job(journal(tmp_path).jobs) if job.attempts[0].instance == "c1"]
    assert lost, "no job ran in c1 when its broker was killed"
    for job in lost:
        assert [a.status for a in job.attempts] == ["failed", "success"], job
        assert "was lost with" in job.attempts[0].reason, job
        assert job.attempts[1].instance != "c1", job
    # every rerun began after c1 was gone, its processes with it (the jobs' own stamps)
    c1_gone = float(instance.flux("jobs", "-n", "-o", "{t_inactive}", child))
    starts: dict[str, list[float]] = {}
    for stamp in stamps(tmp_path):
        if stamp[0] == "start":
            starts.setdefault(stamp[1], []).append(float(stamp[3]))
    reruns = {name: sorted(at)[1:] for name, at in starts.items() if len(at) > 1}
    assert sorted(reruns) == sorted(f"work{job.final.wildcards['i']}" for job in lost), reruns
    assert all(at >= c1_gone for times in reruns.values() for at in times), (c1_gone, reruns)
    assert instance.active() == [], "jobs or children left active"


@pytest.mark.parametrize("rerun_incomplete", [False, True])
def test_killed_snakemake_restart_runs_no_job_twice_and_leaves_no_child(
    instance, tmp_path, rerun_incomplete
):
    """kill -9 of Snakemake while its jobs run in both children; the restart
    cancels the dead run's children (their jobs die with them) before it starts
    its own, reruns their jobs, and leaves nothing active."""
    write_snakefile(tmp_path, SNAKEFILE)
    first = start(instance, tmp_path, "first.log")
    try:
        assert wait_until(lambda: started(tmp_path) >= JOBS, 90), (
            tmp_path / "first.log"
        ).read_text()
        first.send_signal(signal.SIGKILL)
    finally:
        finish(first)
    assert sorted(instance.child_jobs()) == ["c0", "c1"], "the dead run's children live on"
    subprocess.run([*SNAKEMAKE, "--unlock"], cwd=tmp_path, capture_output=True, check=True)
    args = ("--rerun-incomplete",) if rerun_incomplete else ()
    second = start(instance, tmp_path, "second.log", *args)
    log = tmp_path / "second.log"
    try:
        # the dead run's jobs are released only once the restart has settled them:
        # any of them still running would complete now and be stamped twice
        assert wait_until(
            lambda: "of earlier runs ended" in log.read_text() or second.poll() is not None, 120
        ), log.read_text()
        (tmp_path / "release").touch()
        assert finish(second) == 0, log.read_text()
    finally:
        (tmp_path / "release").touch()
        finish(second)
    text = log.read_text()
    assert text.count("of the earlier run") == 2, text
    assert text.count("RUN: cancelled") == 2, text
    assert_once_each_and_nothing_left(tmp_path)
    assert instance.active() == [], "jobs or children left active"


def test_stopped_run_leaves_no_child_and_no_job_within_seconds(instance, tmp_path):
    """SIGTERM while jobs run in both children: Snakemake ends, and with it every
    job (each taking seconds to stop) and both children. (Ctrl-C takes the same
    way out of the plugin, the backend's close; SIGTERM alone keeps CI short.)"""
    write_snakefile(tmp_path, SNAKEFILE)
    process = start(instance, tmp_path, "run.log")
    try:
        assert wait_until(lambda: started(tmp_path) >= JOBS, 90), (tmp_path / "run.log").read_text()
        began = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert finish(process, timeout=60) != 0
        gone = time.monotonic() - began
    finally:
        finish(process)
        (tmp_path / "release").touch()
    assert instance.active() == [], "jobs or children left active"
    assert gone < 30, f"took {gone:.1f} s"
    found = stamps(tmp_path)
    assert [s for s in found if s[0] in ("end", "double")] == [], found
    alive = [s for s in found if s[0] == "start" and pid_alive(int(s[2]))]
    assert alive == [], f"executions still running: {alive}"
