"""The group runner, run as the backends run it (a script and a JSON spec),
with real member processes."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import psutil
import pytest

from snakemake_executor_plugin_matensemble.intake.command import GROUP_RUNNER


def member(name, command, service=False, wait_for=(), threads=1):
    return {
        "name": name,
        "command": command,
        "shell": "/bin/bash",
        "env": {},
        "unset": [],
        "service": service,
        "threads": threads,
        "wait_for": list(wait_for),
    }


def in_order(*sets):
    """Sets that each wait for the one before (a chain)."""
    return [{"members": members, "after": [i - 1] if i else []} for i, members in enumerate(sets)]


def independent(*sets):
    return [{"members": members, "after": []} for members in sets]


def sleeper(marker):
    """A command whose process shows ``marker`` in its arguments, for two minutes."""
    return f"{sys.executable} -c 'import time; time.sleep(120)' {marker}"


def write_spec(tmp_path, sets, cores=1, latency_wait=5.0, temp=()):
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps({"sets": sets, "cores": cores, "latency_wait": latency_wait, "temp": list(temp)})
    )
    return spec


def run_runner(tmp_path, sets, cores=1, latency_wait=5.0, timeout=60, temp=()):
    spec = write_spec(tmp_path, sets, cores, latency_wait, temp)
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
        in_order(
            [member("a", "echo a >> order")],
            [member("b", "echo b >> order; exit 3")],
            [member("c", "echo c >> order")],
        ),
        cores=4,
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
        independent([member("produce", "seq 3 > p"), member("consume", "sort -r p > out")]),
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
    done = run_runner(tmp_path, independent([consumer, service]), cores=2)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "asked").read_text() == "up\n"
    assert time.monotonic() - started < 60  # not the service's 120 s
    assert running(marker) == []
    assert "terminating the services" in done.stdout


def test_a_failing_member_kills_the_others_of_its_set(tmp_path):
    marker = f"long-{tmp_path.name}"
    done = run_runner(
        tmp_path,
        independent(
            [member("long", f"{sleeper(marker)}; true"), member("bad", "sleep 0.5; exit 5")]
        ),
    )
    assert done.returncode == 5
    assert "group member bad failed (5)" in done.stdout
    assert running(marker) == []


def test_a_service_output_that_never_comes_fails_after_the_latency_wait(tmp_path):
    marker = f"idle-{tmp_path.name}"
    service = member("serve", f"{sleeper(marker)}; true", service=True)
    consumer = member("ask", "cat served", wait_for=["served"])
    done = run_runner(tmp_path, independent([service, consumer]), cores=2, latency_wait=0.5)
    assert done.returncode == 1
    assert "missing input after 0.5 s (--latency-wait): served" in done.stdout
    assert running(marker) == []


@pytest.mark.parametrize("signum", ["TERM", "INT"])
def test_a_signal_reaches_the_running_members(tmp_path, signum):
    marker = f"sig-{signum}-{tmp_path.name}"
    sets = independent([member("a", sleeper(marker))], [member("b", sleeper(marker))])
    spec = write_spec(tmp_path, sets, cores=2)
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


def intervals(path):
    """(start, end) of each member that logged ``start NS`` and ``end NS`` lines."""
    spans = {}
    for line in path.read_text().splitlines():
        name, what, stamp = line.split()
        spans.setdefault(name, {})[what] = int(stamp)
    return [(span["start"], span["end"]) for span in spans.values()]


def most_at_once(spans):
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


def timed(name, seconds=0.4):
    return (
        f"echo {name} start $(date +%s%N) >> spans; sleep {seconds}; "
        f"echo {name} end $(date +%s%N) >> spans"
    )


def test_independent_members_run_at_once_as_far_as_their_threads_fit(tmp_path):
    sets = independent(*([member(f"m{i}", timed(f"m{i}"))] for i in range(4)))
    sets.append({"members": [member("two", timed("two"), threads=2)], "after": []})
    done = run_runner(tmp_path, sets, cores=2)
    assert done.returncode == 0, done.stdout + done.stderr
    spans = intervals(tmp_path / "spans")
    assert len(spans) == 5
    assert most_at_once(spans) == 2  # two 1-thread members at a time; "two" alone


def test_a_member_starts_after_those_it_reads_from(tmp_path):
    sets = [
        {"members": [member("slow", "sleep 0.4; echo made > made")], "after": []},
        {"members": [member("reader", "cat made > read")], "after": [0]},
        {"members": [member("other", "echo other > other")], "after": []},
    ]
    done = run_runner(tmp_path, sets, cores=4)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "read").read_text() == "made\n"


def test_after_a_failure_running_members_finish_and_no_other_starts(tmp_path):
    sets = [
        {"members": [member("running", "sleep 0.5; echo done > finished")], "after": []},
        {"members": [member("bad", "exit 4")], "after": []},
        {"members": [member("later", "echo ran > later")], "after": [1]},
        {"members": [member("queued", "echo ran > queued")], "after": []},
    ]
    done = run_runner(tmp_path, sets, cores=2)
    assert done.returncode == 4
    assert (tmp_path / "finished").exists()  # as Snakemake, waits for the running job
    assert not (tmp_path / "later").exists()
    assert not (tmp_path / "queued").exists()


def test_a_temp_file_is_removed_once_its_makers_and_readers_succeeded(tmp_path):
    check = "for f in t1 t2; do test -e $f && echo $f present || echo $f gone; done > seen"
    done = run_runner(
        tmp_path,
        in_order(
            [member("make", "echo x > t1; echo y > t2")],
            [member("read", "cat t1 > r")],
            [member("check", check)],
        ),
        temp=[{"path": "t1", "after": ["make", "read"]}, {"path": "t2", "after": ["never"]}],
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "seen").read_text() == "t1 gone\nt2 present\n"


def test_a_temp_file_stays_when_its_reader_failed(tmp_path):
    done = run_runner(
        tmp_path,
        in_order([member("make", "echo x > t1")], [member("read", "cat t1; exit 2")]),
        temp=[{"path": "t1", "after": ["make", "read"]}],
    )
    assert done.returncode == 2
    assert (tmp_path / "t1").exists()
