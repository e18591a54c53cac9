"""A watchdog process that stops local jobs if Snakemake itself is killed.

SIGINT and SIGTERM are handled by the executor (every job is cancelled), but
nothing in a process survives SIGKILL or an out-of-memory kill. The guard is a
tiny helper process, in its own session so that terminal signals do not reach
it, reading the process groups of running jobs from a pipe. When the pipe
closes without a goodbye (Snakemake died), it terminates every process still in
one of those groups and in Snakemake's session (so a group id the system has
meanwhile given to another program is never touched), so no job keeps running
unseen and --rerun-incomplete starts clean.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

_GUARD = r"""
import os, signal, sys, time
grace, session = float(sys.argv[1]), int(sys.argv[2])
groups = set()
for line in sys.stdin:
    op, _, pgid = line.strip().partition(" ")
    if op == "+":
        groups.add(int(pgid))
    elif op == "-":
        groups.discard(int(pgid))
    elif op == "bye":
        sys.exit(0)
def members():
    # Only processes still in one of the jobs' groups AND in Snakemake's session:
    # a process group id reused by an unrelated program is never touched.
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) in groups and int(fields[3]) == session:
            found.append(int(entry))
    return found
def signal_all(signum):
    for pid in members():
        try:
            os.kill(pid, signum)
        except OSError:
            pass
signal_all(signal.SIGTERM)
time.sleep(grace)
signal_all(signal.SIGKILL)
"""


class OrphanGuard:
    """Parent side of the watchdog: tell it which process groups are alive.

    ``kill_grace_seconds``: seconds (wall time, ``time.sleep`` in the helper)
    between its SIGTERM and its SIGKILL. Starting it raises :class:`OSError`
    if the helper cannot be started; messages to a helper that is gone are
    dropped silently (it can only be gone if it was killed).
    """

    def __init__(self, kill_grace_seconds: float):
        self._process = subprocess.Popen(
            [sys.executable, "-c", _GUARD, str(kill_grace_seconds), str(os.getsid(0))],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )

    def _send(self, line: str) -> None:
        if self._process.stdin is None or self._process.stdin.closed:
            return
        with contextlib.suppress(BrokenPipeError, ValueError):
            self._process.stdin.write(f"{line}\n".encode())
            self._process.stdin.flush()

    def watch(self, pgid: int) -> None:
        self._send(f"+ {pgid}")

    def forget(self, pgid: int) -> None:
        self._send(f"- {pgid}")

    def close(self) -> None:
        """Say goodbye (nothing left to guard) and reap the helper (waits up to
        5 s, then kills it)."""
        self._send("bye")
        with contextlib.suppress(OSError):
            self._process.stdin.close()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
