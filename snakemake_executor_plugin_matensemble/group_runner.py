"""Runs the members of one group job in order, inside the group's packed job.

Started by the backend as ``python group_runner.py SPEC`` (as a script, so that
it imports only the standard library). ``SPEC`` is a JSON file written by
:mod:`.command`: the members in Snakemake's topological order, each with the
command, shell and the environment changes Snakemake's ``shell()`` made for it
(applied on top of the group job's own environment, which carries the
backend's GPU and task variables). Members
run one after another; the first that fails stops the group, and the runner
exits with its exit code (128 + N for a signal), as Snakemake's own group
execution would. Each member's output goes to the group's log under a header.
SIGTERM/SIGINT are passed on to the running member.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any

_running: subprocess.Popen[bytes] | None = None


def _forward(signum: int, frame: Any) -> None:
    if _running is not None and _running.poll() is None:
        _running.send_signal(signum)
    raise SystemExit(128 + signum)


def run_member(member: dict[str, Any]) -> int:
    """Run one member; its exit code (128 + N when killed by signal N)."""
    global _running
    print(f"[matensemble] group member {member['name']}", flush=True)
    env = {**os.environ, **member["env"]}
    for name in member["unset"]:
        env.pop(name, None)
    _running = subprocess.Popen(member["command"], shell=True, executable=member["shell"], env=env)
    code = _running.wait()
    _running = None
    return 128 - code if code < 0 else code


def main(argv: list[str]) -> int:
    with open(argv[1]) as stream:
        members = json.load(stream)["members"]
    signal.signal(signal.SIGTERM, _forward)
    signal.signal(signal.SIGINT, _forward)
    for member in members:
        code = run_member(member)
        if code:
            print(f"[matensemble] group member {member['name']} failed ({code})", flush=True)
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
