"""Runs the members of one group job in Snakemake's order, inside the group's packed job.

Started by the backend as ``python group_runner.py SPEC`` (as a script, so that
it imports only the standard library, and psutil where the interpreter has it:
Snakemake's own interpreter does). ``SPEC`` is a JSON file written by
:mod:`.command`: ``sets`` of members in dependency order, each member with the
command, shell and the environment changes Snakemake's ``shell()`` made for it
(applied on top of the group job's own environment, which carries the backend's
GPU and task variables).

Sets run one after another, as Snakemake runs a group's jobs. A set of one
member runs alone; a larger set is one of Snakemake's pipe groups, run as
Snakemake's local executor runs it: ``service()`` members first, then the
others, all at once (a member that reads a service's output starts once that
output is there, as Snakemake waits for a job's input); when one of the others
fails, every member of the set is killed; when all of them are done, the
services are terminated (SIGTERM, then SIGKILL after a grace), with the
processes they started. The first failing member stops the group: the runner
exits with its exit code (128 + N for a signal). Each member's output goes to
the group's log under a header. SIGTERM/SIGINT are passed on to the running members.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

#: seconds a terminated service gets before SIGKILL
SERVICE_GRACE_S = 10.0
#: seconds between checks of members running together
POLL_S = 0.02

_running: list[subprocess.Popen[bytes]] = []


def _forward(signum: int, frame: Any) -> None:
    for process in _running:
        if process.poll() is None:
            process.send_signal(signum)
    raise SystemExit(128 + signum)


def _exit_code(code: int) -> int:
    return 128 - code if code < 0 else code


def start_member(member: dict[str, Any]) -> subprocess.Popen[bytes]:
    env = {**os.environ, **member["env"]}
    for name in member["unset"]:
        env.pop(name, None)
    process = subprocess.Popen(member["command"], shell=True, executable=member["shell"], env=env)
    _running.append(process)
    return process


def run_member(member: dict[str, Any]) -> int:
    """Run one member; its exit code (128 + N when killed by signal N)."""
    print(f"[matensemble] group member {member['name']}", flush=True)
    process = start_member(member)
    code = _exit_code(process.wait())
    _running.remove(process)
    if code:
        _print_failed(member, code)
    return code


def _print_failed(member: dict[str, Any], code: int) -> None:
    print(f"[matensemble] group member {member['name']} failed ({code})", flush=True)


def _family(process: subprocess.Popen[bytes]) -> list[int]:
    """``process`` and every process it started (itself only without psutil)."""
    try:
        import psutil

        children = psutil.Process(process.pid).children(recursive=True)
        return [process.pid, *(child.pid for child in children)]
    except Exception:  # psutil absent, or the process is gone
        return [process.pid]


def _signal_all(processes: list[subprocess.Popen[bytes]], signum: int) -> None:
    for pid in [pid for process in processes for pid in _family(process)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _stop(processes: list[subprocess.Popen[bytes]], grace_s: float) -> None:
    """SIGTERM ``processes`` and what they started; SIGKILL after ``grace_s``."""
    _signal_all(processes, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(p.poll() is None for p in processes) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    _signal_all([p for p in processes if p.poll() is None], signal.SIGKILL)
    for process in processes:
        process.wait()
        _running.remove(process)


def _wait_for(paths: list[str], latency_wait: float) -> list[str]:
    """Wait up to ``latency_wait`` seconds for ``paths``; those still missing."""
    deadline = time.monotonic() + latency_wait
    missing = [path for path in paths if not os.path.exists(path)]
    while missing and time.monotonic() < deadline:
        time.sleep(POLL_S)
        missing = [path for path in missing if not os.path.exists(path)]
    return missing


def _start_all(
    members: list[dict[str, Any]], latency_wait: float
) -> tuple[list[tuple[dict[str, Any], subprocess.Popen[bytes]]], str | None]:
    """Start services, then the others, each once the services' outputs it
    reads are there; what was started, and why not all (None: all started)."""
    started = []
    for member in sorted(members, key=lambda member: not member["service"]):
        missing = _wait_for(member["wait_for"], latency_wait)
        if missing:
            return started, (
                f"group member {member['name']}: missing input after {latency_wait:g} s "
                f"(--latency-wait): {', '.join(missing)}"
            )
        started.append((member, start_member(member)))
    return started, None


def run_together(members: list[dict[str, Any]], latency_wait: float) -> int:
    """Run a pipe group: services first, then the others, all at once."""
    names = ", ".join(member["name"] for member in members)
    print(f"[matensemble] group members together: {names}", flush=True)
    started, not_started = _start_all(members, latency_wait)
    if not_started is not None:
        print(f"[matensemble] {not_started}", flush=True)
        _stop([process for _, process in started], grace_s=0)
        return 1
    services = [process for member, process in started if member["service"]]
    others = [(member, process) for member, process in started if not member["service"]]
    while True:
        codes = [(member, process.poll()) for member, process in others]
        failed = [(member, code) for member, code in codes if code]
        if failed:
            member, code = failed[0]
            _print_failed(member, _exit_code(code))
            _stop([process for _, process in started], grace_s=0)
            return _exit_code(code)
        if all(code == 0 for _, code in codes):
            break
        time.sleep(POLL_S)
    for _, process in others:
        _running.remove(process)
    if services:
        print("[matensemble] terminating the services: their consumers are done", flush=True)
        _stop(services, SERVICE_GRACE_S)
    return 0


def run_set(members: list[dict[str, Any]], latency_wait: float) -> int:
    if len(members) == 1 and not members[0]["service"]:
        return run_member(members[0])
    return run_together(members, latency_wait)


def main(argv: list[str]) -> int:
    with open(argv[1]) as stream:
        spec = json.load(stream)
    signal.signal(signal.SIGTERM, _forward)
    signal.signal(signal.SIGINT, _forward)
    for members in spec["sets"]:
        code = run_set(members, spec["latency_wait"])
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
