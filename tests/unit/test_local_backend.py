"""The local backend on its own: binding, logs, exits, walltime, cancel."""

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from snakemake_executor_plugin_matensemble.backends import (
    JobFinished,
    JobStatus,
    LaunchError,
    LaunchSpec,
    LocalBackend,
    local_resources,
)
from snakemake_executor_plugin_matensemble.errors import SettingsError
from snakemake_executor_plugin_matensemble.packing.nodes import NodeShare, Placement
from snakemake_executor_plugin_matensemble.packing.resource_request import ResourceRequest

from ..helpers import pid_alive, wait_until

_keys = iter(range(1, 10**6))


def spec(tmp_path: Path, command: str, walltime=None, cwd=None) -> LaunchSpec:
    key = next(_keys)
    return LaunchSpec(
        key=key,
        command=command,
        name=f"job{key}",
        cwd=str(cwd or tmp_path),
        env=dict(os.environ),
        log_path=str(tmp_path / "logs" / f"{key}.log"),
        request=ResourceRequest(walltime_s=walltime),
    )


def on(cores=(0,), gpus=()) -> Placement:
    return Placement((NodeShare(0, 1, tuple(cores), tuple(gpus)),))


def run_to_end(backend: LocalBackend, timeout: float = 30) -> list[JobFinished]:
    finished: list[JobFinished] = []
    deadline = time.time() + timeout
    while backend.running_count and time.time() < deadline:
        finished += [e for e in backend.wait(1.0) if isinstance(e, JobFinished)]
    assert not backend.running_count, "jobs did not end in time"
    return finished


@pytest.fixture
def backend():
    backend = LocalBackend(kill_grace_seconds=1)
    yield backend
    backend.close()


def test_discovers_usable_cpus(backend):
    (node,) = backend.discover()
    assert list(node.cores) == sorted(os.sched_getaffinity(0))


def test_job_runs_on_exactly_its_cores_and_logs_output(backend, tmp_path):
    core = max(os.sched_getaffinity(0))
    job = spec(tmp_path, "grep Cpus_allowed_list /proc/self/status; echo err >&2")
    backend.launch(job, on(cores=(core,)))
    (result,) = run_to_end(backend)
    assert result.status is JobStatus.SUCCESS
    log = Path(job.log_path).read_text()
    assert f"Cpus_allowed_list:\t{core}\n" in log
    assert "err" in log
    assert os.sched_getaffinity(0) == set(backend.core_ids), "launcher affinity restored"


def test_gpu_ids_are_exported_and_cpu_jobs_see_none(tmp_path):
    backend = LocalBackend(gpus="2")
    try:
        gpu_job = spec(tmp_path, 'echo "[$CUDA_VISIBLE_DEVICES|$ROCR_VISIBLE_DEVICES]"')
        cpu_job = spec(tmp_path, 'echo "[$CUDA_VISIBLE_DEVICES]"')
        backend.launch(gpu_job, on(gpus=("1",)))
        backend.launch(cpu_job, on())
        run_to_end(backend)
    finally:
        backend.close()
    assert Path(gpu_job.log_path).read_text() == "[1|1]\n"
    assert Path(cpu_job.log_path).read_text() == "[]\n"


def test_exit_code_and_signal_are_reported(backend, tmp_path):
    failing = spec(tmp_path, "exit 3")
    killed = spec(tmp_path, "kill -KILL $$")
    backend.launch(failing, on())
    backend.launch(killed, on())
    results = {r.key: r for r in run_to_end(backend)}
    assert results[failing.key].status is JobStatus.FAILED
    assert results[failing.key].exit_code == 3
    assert "exited with code 3" in results[failing.key].reason
    assert results[killed.key].status is JobStatus.FAILED
    assert results[killed.key].signal == 9
    assert "SIGKILL" in results[killed.key].reason


def test_missing_program_fails_with_the_shell_message(backend, tmp_path):
    job = spec(tmp_path, "no-such-program-xyz")
    backend.launch(job, on())
    (result,) = run_to_end(backend)
    assert result.exit_code == 127
    assert "not found" in Path(job.log_path).read_text()


def test_bad_working_directory_is_a_launch_error(backend, tmp_path):
    with pytest.raises(LaunchError, match="could not be started"):
        backend.launch(spec(tmp_path, "true", cwd=tmp_path / "missing"), on())
    assert backend.running_count == 0


def test_walltime_is_enforced_and_reported_as_timeout(backend, tmp_path):
    job = spec(tmp_path, "sleep 30", walltime=1)
    started = time.time()
    backend.launch(job, on())
    (result,) = run_to_end(backend)
    assert result.status is JobStatus.TIMEOUT
    assert "exceeded its runtime of 1 s" in result.reason
    assert time.time() - started < 10


def test_a_job_ignoring_sigterm_is_killed_after_the_grace(backend, tmp_path):
    job = spec(tmp_path, "trap '' TERM; sleep 30 & wait; sleep 30", walltime=1)
    started = time.time()
    backend.launch(job, on())
    (result,) = run_to_end(backend)
    assert result.status is JobStatus.TIMEOUT
    assert time.time() - started < 10


def test_leftover_background_processes_die_with_the_job(backend, tmp_path):
    pidfile = tmp_path / "bg.pid"
    job = spec(tmp_path, f"sleep 60 & echo $! > {pidfile}")
    backend.launch(job, on())
    run_to_end(backend)
    bg = int(pidfile.read_text())
    assert wait_until(lambda: not pid_alive(bg), 5), "background process survived"


def test_cancel_all_stops_every_process(backend, tmp_path):
    pids = []
    for i in range(3):
        pidfile = tmp_path / f"{i}.pid"
        backend.launch(spec(tmp_path, f"sleep 60 & echo $! > {pidfile}; wait"), on())
        pids.append(pidfile)
    assert wait_until(lambda: all(p.exists() and p.read_text() for p in pids), 10)
    results = backend.cancel_all()
    assert len(results) == 3
    assert all(r.status is JobStatus.CANCELLED for r in results)
    for pidfile in pids:  # SIGKILL is delivered asynchronously: allow a moment
        assert wait_until(lambda p=pidfile: not pid_alive(int(p.read_text())), 5)


GUARDED_PARENT = """
import os, signal, sys, time
from snakemake_executor_plugin_matensemble.packing.nodes import NodeShare, Placement
from snakemake_executor_plugin_matensemble.backends import LaunchSpec, LocalBackend
from snakemake_executor_plugin_matensemble.packing.resource_request import ResourceRequest
backend = LocalBackend(kill_grace_seconds=1)
pidfile = sys.argv[1]
backend.launch(
    LaunchSpec(1, f"sleep 60 & echo $! > {pidfile}; wait", "j", os.getcwd(),
               dict(os.environ), pidfile + ".log", ResourceRequest()),
    Placement((NodeShare(0, 1, (backend.core_ids[0],)),)),
)
while not (os.path.exists(pidfile) and open(pidfile).read()):
    time.sleep(0.05)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_jobs_are_stopped_when_snakemake_is_killed(tmp_path):
    pidfile = tmp_path / "job.pid"
    parent = subprocess.run(
        [sys.executable, "-c", GUARDED_PARENT, str(pidfile)], cwd=tmp_path, timeout=60
    )
    assert parent.returncode == -9
    job_pid = int(pidfile.read_text())
    assert wait_until(lambda: not pid_alive(job_pid), 10), "job outlived a killed parent"


# -- what the machine offers: --matensemble-local-cores / --matensemble-local-gpus


def test_more_gpus_than_the_machine_shows_is_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(local_resources, "detect_gpus", lambda: ["0", "1"])
    with caplog.at_level(logging.WARNING, logger="snakemake.logging.matensemble"):
        assert local_resources.local_gpus("7") == [str(i) for i in range(7)]
    (record,) = caplog.records
    assert "--matensemble-local-gpus=7 is more than the 2 GPU(s) this machine shows" in (
        record.getMessage()
    )
    assert "2,3,4,5,6 may not exist" in record.getMessage()


def test_gpus_the_machine_has_give_no_warning(monkeypatch, caplog):
    monkeypatch.setattr(local_resources, "detect_gpus", lambda: ["0", "1", "2"])
    with caplog.at_level(logging.WARNING, logger="snakemake.logging.matensemble"):
        assert local_resources.local_gpus("2") == ["0", "1"]
        assert local_resources.local_gpus("0,2") == ["0", "2"]
        assert local_resources.local_gpus("none") == []
    assert not caplog.records


def test_named_gpus_are_kept_as_given(monkeypatch):
    monkeypatch.setattr(local_resources, "detect_gpus", lambda: ["GPU-a1", "GPU-b2"])
    assert local_resources.local_gpus("GPU-b2") == ["GPU-b2"]


@pytest.mark.parametrize("value", ["-1", "0 1", "gpu 1", "1-", "3-1", ","])
def test_a_bad_gpu_setting_names_the_flag_and_the_fix(monkeypatch, value):
    monkeypatch.setattr(local_resources, "detect_gpus", lambda: [])
    with pytest.raises(SettingsError, match=r"--matensemble-local-gpus=.*Fix: give e\.g\."):
        local_resources.local_gpus(value)


def test_more_cores_than_cpus_is_a_warning_and_shares_cpus(monkeypatch, caplog):
    monkeypatch.setattr(local_resources, "usable_cpus", lambda: [4, 5])
    with caplog.at_level(logging.WARNING, logger="snakemake.logging.matensemble"):
        cores, cpu_of = local_resources.local_cores("3")
    assert (cores, cpu_of) == ([0, 1, 2], {0: 4, 1: 5, 2: 4})
    assert "--matensemble-local-cores=3 is more than the 2 CPUs" in caplog.text


def test_a_cpu_list_outside_the_affinity_is_refused(monkeypatch):
    monkeypatch.setattr(local_resources, "usable_cpus", lambda: [0, 1])
    assert local_resources.local_cores("1") == ([0], {0: 0})
    assert local_resources.local_cores("0-1") == ([0, 1], {0: 0, 1: 1})
    with pytest.raises(SettingsError, match=r"names CPUs this process may not use \(\[2\]"):
        local_resources.local_cores("1-2")
    with pytest.raises(SettingsError, match="neither a count nor a CPU list"):
        local_resources.local_cores("banana")


def test_the_cores_a_job_gets_are_exported_as_a_cpu_list(tmp_path, monkeypatch):
    monkeypatch.setattr(local_resources, "usable_cpus", lambda: [0, 1, 2, 3, 6])
    backend = LocalBackend(cores="5", gpus="none")
    try:
        job = spec(tmp_path, "true")
        task = backend._tasks(job, on(cores=(0, 1, 2, 6)))[0]
        assert backend.task_environment(job, task)["MATENSEMBLE_CORES"] == "0-2,6"
    finally:
        backend.close()


# -- a killed run's guard, seen from the next run ---------------------------------


def register_guard(workdir: Path, snakemake_pid: int, guard_pid: int) -> Path:
    from snakemake_executor_plugin_matensemble.backends.orphan_guard import (
        GUARDS_DIR,
        process_start,
    )

    (workdir / GUARDS_DIR).mkdir(parents=True, exist_ok=True)
    path = workdir / GUARDS_DIR / f"{snakemake_pid}.json"
    path.write_text(
        json.dumps(
            {
                "guard_pid": guard_pid,
                "guard_started": process_start(guard_pid),
                "snakemake_pid": snakemake_pid,
                "snakemake_started": process_start(snakemake_pid) if snakemake_pid > 1 else -1,
            }
        )
    )
    return path


def test_the_next_run_waits_until_a_killed_runs_guard_has_ended(tmp_path):
    from snakemake_executor_plugin_matensemble.backends.orphan_guard import wait_for_dead_runs

    guard = subprocess.Popen(["sleep", "0.6"])
    path = register_guard(tmp_path, snakemake_pid=1, guard_pid=guard.pid)
    reaper = threading.Thread(target=guard.wait)
    reaper.start()  # so that the finished "guard" does not stay a zombie
    waited = wait_for_dead_runs(tmp_path, timeout=10)
    reaper.join()
    assert 0.3 < waited < 5
    assert guard.returncode == 0
    assert not path.exists()


def test_a_living_runs_guard_is_left_alone_and_a_stale_file_removed(tmp_path):
    from snakemake_executor_plugin_matensemble.backends.orphan_guard import wait_for_dead_runs

    living = register_guard(tmp_path, snakemake_pid=os.getpid(), guard_pid=os.getpid())
    done = subprocess.Popen(["true"])
    done.wait()
    stale = register_guard(tmp_path, snakemake_pid=done.pid, guard_pid=done.pid)
    assert wait_for_dead_runs(tmp_path, timeout=1) < 0.5
    assert living.exists()
    assert not stale.exists()


def test_a_guard_that_does_not_end_stops_the_next_run(tmp_path):
    from snakemake_executor_plugin_matensemble.backends.orphan_guard import wait_for_dead_runs

    guard = subprocess.Popen(["sleep", "30"])
    try:
        register_guard(tmp_path, snakemake_pid=1, guard_pid=guard.pid)
        with pytest.raises(TimeoutError, match=f"guard \\(pid {guard.pid}\\)"):
            wait_for_dead_runs(tmp_path, timeout=0.3)
    finally:
        guard.kill()
        guard.wait()


def test_the_guard_registers_itself_until_closed(tmp_path):
    from snakemake_executor_plugin_matensemble.backends.orphan_guard import (
        GUARDS_DIR,
        OrphanGuard,
    )

    guard = OrphanGuard(1.0, workdir=tmp_path)
    path = tmp_path / GUARDS_DIR / f"{os.getpid()}.json"
    record = json.loads(path.read_text())
    assert (record["guard_pid"], record["snakemake_pid"]) == (guard.pid, os.getpid())
    guard.close()
    assert not path.exists()
