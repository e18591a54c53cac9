"""The group runner, run as the backends run it (a script and a JSON spec),
with real member processes."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import psutil
import pytest

from snakemake_executor_plugin_matensemble.command import GROUP_RUNNER


def member(name, command, service=False, wait_for=()):
    return {
        "name": name,
        "command": command,
        "shell": "/bin/bash",
        "env": {},
        "unset": [],
        "service": service,
        "wait_for": list(wait_for),
    }


def sleeper(marker):
    """A command whose process shows ``marker`` in its arguments, for two minutes."""
    return f"{sys.executable} -c 'import time; time.sleep(120)' {marker}"


def run_runner(tmp_path, sets, latency_wait=5.0, timeout=60):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"sets": sets, "latency_wait": latency_wait}))
    return subprocess.run(
        [sys.executable, GROUP_RUNNER, str(spec)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def running(marker):
    return [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if any(marker in part for part in p.info["cmdline"] or [])
    ]


def test_sets_run_in_order_and_stop_at_the_first_failure(tmp_path):
    done = run_runner(
        tmp_path,
        [
            [member("a", "echo a >> order")],
            [member("b", "echo b >> order; exit 3")],
            [member("c", "echo c >> order")],
        ],
    )
    assert done.returncode == 3
    assert (tmp_path / "order").read_text() == "a\nb\n"
    assert "group member b failed (3)" in done.stdout


def test_a_pipe_group_runs_together(tmp_path):
    # the consumer reads the FIFO while the producer writes it: one after the
    # other, the producer would block for ever
    subprocess.run(["mkfifo", str(tmp_path / "p")], check=True)
    done = run_runner(
        tmp_path,
        [[member("produce", "seq 3 > p"), member("consume", "sort -r p > out")]],
        timeout=30,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "out").read_text() == "3\n2\n1\n"


def test_services_start_first_and_are_stopped_with_their_children(tmp_path):
    marker = f"svc-{tmp_path.name}"
    service = member(
        "serve",
        f"(sleep 0.3; echo up > served) & {sleeper(marker)} & wait",
        service=True,
    )
    consumer = member("ask", "cat served > asked", wait_for=["served"])
    started = time.monotonic()
    done = run_runner(tmp_path, [[consumer, service]])
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "asked").read_text() == "up\n"
    assert time.monotonic() - started < 60  # not the service's 120 s
    assert running(marker) == []
    assert "terminating the services" in done.stdout


def test_a_failing_member_kills_the_others_of_its_set(tmp_path):
    marker = f"long-{tmp_path.name}"
    done = run_runner(
        tmp_path,
        [[member("long", f"{sleeper(marker)}; true"), member("bad", "sleep 0.5; exit 5")]],
    )
    assert done.returncode == 5
    assert "group member bad failed (5)" in done.stdout
    assert running(marker) == []


def test_a_service_output_that_never_comes_fails_after_the_latency_wait(tmp_path):
    marker = f"idle-{tmp_path.name}"
    service = member("serve", f"{sleeper(marker)}; true", service=True)
    consumer = member("ask", "cat served", wait_for=["served"])
    done = run_runner(tmp_path, [[service, consumer]], latency_wait=0.5)
    assert done.returncode == 1
    assert "missing input after 0.5 s (--latency-wait): served" in done.stdout
    assert running(marker) == []


@pytest.mark.parametrize("signum", ["TERM", "INT"])
def test_a_signal_reaches_the_running_members(tmp_path, signum):
    marker = f"sig-{signum}-{tmp_path.name}"
    spec = tmp_path / "spec.json"
    sets = [[member("a", sleeper(marker)), member("b", sleeper(marker))]]
    spec.write_text(json.dumps({"sets": sets, "latency_wait": 5}))
    runner = subprocess.Popen([sys.executable, GROUP_RUNNER, str(spec)], cwd=tmp_path)
    deadline = time.monotonic() + 20
    while len(running(marker)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(running(marker)) == 2
    runner.send_signal(getattr(__import__("signal"), f"SIG{signum}"))
    assert runner.wait(timeout=20) != 0
    deadline = time.monotonic() + 10
    while running(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running(marker) == []
