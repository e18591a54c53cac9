"""Runs the members of one group job as Snakemake runs them, inside the group's packed job.

Started by the backend as ``python group_runner.py SPEC`` (as a script, so that
it imports only the standard library, and psutil where the interpreter has it:
Snakemake's own interpreter does). ``SPEC`` is a JSON file written by
:mod:`.command`: the group's ``cores``, and ``sets`` of members in dependency
order, each set with the sets it waits for (``after``), each member with its
command, shell, threads and the environment changes Snakemake's ``shell()``
made for it (applied on top of the group job's own environment, which carries
the backend's GPU and task variables).

A set starts once the sets it waits for are done, as many at once as their
threads fit the group's cores (one always runs), in Snakemake's order, as
Snakemake's own scheduler runs a group's jobs on the group's cores. A set of one
member runs alone; a larger set is one of Snakemake's pipe groups, run as
Snakemake's local executor runs it: ``service()`` members first, then the
others, all at once (a member that reads a service's output starts once that
output is there, as Snakemake waits for a job's input); when one of the others
fails, every member of the set is killed; when all of them are done, the
services are terminated (SIGTERM, then SIGKILL after a grace), with the
processes they started. After a failure no further set starts; the runner waits
for those running, as Snakemake does, and exits with the first failure's exit
code (128 + N for a signal). Each member's output goes to the group's log under
a header. SIGTERM/SIGINT are passed on to the running members.

``temp`` lists the group's ``temp()`` files that no job outside the group needs,
each with the members (``after``, by name) that make or read it: as soon as all
of those succeeded, the file is removed, before any later set starts, as
Snakemake's local executor removes a temp file once its last consumer is done.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

#: seconds a terminated service gets before SIGKILL
SERVICE_GRACE_S = 10.0
#: seconds between checks while waiting for a service's output
POLL_S = 0.02

Process = subprocess.Popen  # one member's shell

_running: list[Process] = []


def _forward(signum: int, frame: Any) -> None:
    for process in _running:
        if process.poll() is None:
            process.send_signal(signum)
    raise SystemExit(128 + signum)


def _exit_code(code: int) -> int:
    return 128 - code if code < 0 else code


def _print(text: str) -> None:
    print(f"[matensemble] {text}", flush=True)


def start_member(member: dict[str, Any]) -> Process:
    env = {**os.environ, **member["env"]}
    for name in member["unset"]:
        env.pop(name, None)
    process = subprocess.Popen(member["command"], shell=True, executable=member["shell"], env=env)
    _running.append(process)
    return process


def _family(process: Process) -> list[int]:
    """``process`` and every process it started (itself only without psutil)."""
    try:
        import psutil

        children = psutil.Process(process.pid).children(recursive=True)
        return [process.pid, *(child.pid for child in children)]
    except Exception:  # psutil absent, or the process is gone
        return [process.pid]


def _signal_all(processes: list[Process], signum: int) -> None:
    for pid in [pid for process in processes for pid in _family(process)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _stop(processes: list[Process], grace_s: float) -> None:
    """SIGTERM ``processes`` and what they started; SIGKILL after ``grace_s``."""
    _signal_all(processes, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(p.poll() is None for p in processes) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    _signal_all([p for p in processes if p.poll() is None], signal.SIGKILL)
    for process in processes:
        process.wait()


def _wait_for(paths: list[str], latency_wait: float) -> list[str]:
    """Wait up to ``latency_wait`` seconds for ``paths``; those still missing."""
    deadline = time.monotonic() + latency_wait
    missing = [path for path in paths if not os.path.exists(path)]
    while missing and time.monotonic() < deadline:
        time.sleep(POLL_S)
        missing = [path for path in missing if not os.path.exists(path)]
    return missing


class SetRun:
    """One set of members, started together; :meth:`poll` says when it is done."""

    def __init__(self, members: list[dict[str, Any]], latency_wait: float):
        self.members = sorted(members, key=lambda member: not member["service"])
        self.started: list[tuple[dict[str, Any], Process]] = []
        self.code: int | None = None
        if len(members) > 1 or members[0]["service"]:
            names = ", ".join(member["name"] for member in members)
            _print(f"group members together: {names}")
        else:
            _print(f"group member {members[0]['name']}")
        for member in self.members:
            missing = _wait_for(member["wait_for"], latency_wait)
            if missing:
                _print(
                    f"group member {member['name']}: missing input after {latency_wait:g} s "
                    f"(--latency-wait): {', '.join(missing)}"
                )
                self._end(1)
                return
            self.started.append((member, start_member(member)))

    def poll(self) -> int | None:
        """None while running; then the exit code (0: every member succeeded)."""
        if self.code is not None:
            return self.code
        codes = [(member, process.poll()) for member, process in self.started]
        others = [(member, code) for member, code in codes if not member["service"]]
        failed = [(member, code) for member, code in others if code]
        if failed:
            member, code = failed[0]
            _print(f"group member {member['name']} failed ({_exit_code(code)})")
            self._end(_exit_code(code))
        elif all(code == 0 for _, code in others):
            self._end(0)
        return self.code

    def _end(self, code: int) -> None:
        """Stop what is left of the set: the services once their consumers are
        done (with a grace), every member at once after a failure."""
        alive = [process for _, process in self.started if process.poll() is None]
        if alive and code == 0:
            _print("terminating the services: their consumers are done")
        _stop(alive, SERVICE_GRACE_S if code == 0 else 0)
        for _, process in self.started:
            _running.remove(process)
        self.code = code


def _threads(members: list[dict[str, Any]]) -> int:
    return sum(member.get("threads", 1) for member in members)


def _wait_for_a_child() -> None:
    """Block until a child process has ended (without reaping it: the
    member's Popen does), or briefly where that cannot be waited for."""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)
    except (ChildProcessError, AttributeError):
        time.sleep(POLL_S)


class TempFiles:
    """The group's temp files, each removed once the members that make and
    read it have all succeeded."""

    def __init__(self, temp: list[dict[str, Any]]):
        self.pending = [(entry["path"], set(entry["after"])) for entry in temp]
        self.succeeded: set[str] = set()

    def members_done(self, members: list[dict[str, Any]]) -> None:
        self.succeeded.update(member["name"] for member in members)
        for path, after in [entry for entry in self.pending if entry[1] <= self.succeeded]:
            self.pending.remove((path, after))
            _print(f"removing temporary output {path}")
            _remove(path)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def run_sets(
    sets: list[dict[str, Any]],
    cores: int,
    latency_wait: float,
    temp: list[dict[str, Any]] | None = None,
) -> int:
    """Run every set as soon as the sets it waits for are done and its threads
    fit; the first failure's exit code (0: all succeeded)."""
    waiting = list(range(len(sets)))
    running: dict[int, SetRun] = {}
    done: set[int] = set()
    failure = 0
    temp_files = TempFiles(temp or [])
    while waiting or running:
        used = sum(_threads(sets[i]["members"]) for i in running)
        for index in list(waiting) if not failure else []:
            threads = _threads(sets[index]["members"])
            ready = all(other in done for other in sets[index]["after"])
            if ready and (not running or used + threads <= cores):
                waiting.remove(index)
                running[index] = SetRun(sets[index]["members"], latency_wait)
                used += threads
        ended = [(index, run.poll()) for index, run in running.items()]
        ended = [(index, code) for index, code in ended if code is not None]
        for index, code in ended:
            del running[index]
            done.add(index)
            failure = failure or code
            if not code:
                temp_files.members_done(sets[index]["members"])
        if failure and not running:
            return failure
        if running and not ended:
            _wait_for_a_child()
    return failure


def main(argv: list[str]) -> int:
    with open(argv[1]) as stream:
        spec = json.load(stream)
    signal.signal(signal.SIGTERM, _forward)
    signal.signal(signal.SIGINT, _forward)
    cores = max(1, spec.get("cores", 1))
    return run_sets(spec["sets"], cores, spec["latency_wait"], spec.get("temp"))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
