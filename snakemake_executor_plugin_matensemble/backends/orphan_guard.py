"""A watchdog process that stops local jobs if Snakemake itself is killed, and
how a later run waits for it.

SIGINT and SIGTERM are handled by the executor (every job is cancelled), but
nothing in a process survives SIGKILL or an out-of-memory kill. The guard is a
tiny helper process, in its own session so that terminal signals do not reach
it, reading the process groups of running jobs from a pipe. When the pipe
closes without a goodbye (Snakemake died), it terminates every process still in
one of those groups and in Snakemake's session (so a group id the system has
meanwhile given to another program is never touched): SIGTERM, then SIGKILL
after the grace for what is left, and it ends once none is left.

While it guards, it is registered in the workdir
(``.snakemake/matensemble/guards/<snakemake pid>.json``: its pid and Snakemake's,
each with its start time); it removes the file when it ends. A run started in
the same workdir (after ``snakemake --unlock``) calls :func:`wait_for_dead_runs`
before it starts anything: it waits until the guard of every dead run has
stopped that run's jobs, so that no job of the new run overlaps one of the old.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger("snakemake.logging.matensemble.local")

#: Where guards register themselves, relative to the workdir.
GUARDS_DIR = Path(".snakemake") / "matensemble" / "guards"

_GUARD = r"""
import os, signal, sys, time
grace, session, registry = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
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
        if fields[0] != "Z" and int(fields[2]) in groups and int(fields[3]) == session:
            found.append(int(entry))
    return found
def signal_all(signum):
    for pid in members():
        try:
            os.kill(pid, signum)
        except OSError:
            pass
def wait_gone(seconds):
    end = time.monotonic() + seconds
    while members() and time.monotonic() < end:
        time.sleep(0.05)
signal_all(signal.SIGTERM)
wait_gone(grace)
signal_all(signal.SIGKILL)
wait_gone(10.0)
if registry:
    try:
        os.unlink(registry)
    except OSError:
        pass
"""


def process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot), None if it is gone.

    With the pid it identifies a process: a pid the system gave to another
    process since has another start time.
    """
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    try:
        return None if fields[0] == "Z" else int(fields[19])
    except (IndexError, ValueError):
        return None


def same_process(pid: object, started: object) -> bool:
    """Whether ``pid`` still is the process that started at ``started``."""
    if not isinstance(pid, int) or pid <= 0 or started is None:
        return False
    return process_start(pid) == started


class OrphanGuard:
    """Parent side of the watchdog: tell it which process groups are alive.

    ``kill_grace_seconds``: seconds (wall time) between its SIGTERM and its
    SIGKILL. ``workdir``: where it registers itself (None: nowhere). Starting
    it raises :class:`OSError` if the helper cannot be started; messages to a
    helper that is gone are dropped silently (it can only be gone if it was
    killed).
    """

    def __init__(self, kill_grace_seconds: float, workdir: str | os.PathLike | None = None):
        self._registry: Path | None = None
        if workdir is not None:
            (Path(workdir) / GUARDS_DIR).mkdir(parents=True, exist_ok=True)
            self._registry = Path(workdir) / GUARDS_DIR / f"{os.getpid()}.json"
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _GUARD,
                str(kill_grace_seconds),
                str(os.getsid(0)),
                str(self._registry or ""),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )
        if self._registry is not None:
            self._register(self._registry, kill_grace_seconds)

    def _register(self, path: Path, grace: float) -> None:
        """Write the registry file (the helper removes it when it ends)."""
        record = {
            "guard_pid": self._process.pid,
            "guard_started": process_start(self._process.pid),
            "snakemake_pid": os.getpid(),
            "snakemake_started": process_start(os.getpid()),
            "grace": grace,
        }
        path.write_text(json.dumps(record))

    @property
    def pid(self) -> int:
        return self._process.pid

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
        """Say goodbye (nothing left to guard), reap the helper (waits up to
        5 s, then kills it) and unregister it."""
        self._send("bye")
        with contextlib.suppress(OSError):
            self._process.stdin.close()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._registry is not None:
            with contextlib.suppress(OSError):
                self._registry.unlink()


def wait_for_dead_runs(workdir: str | os.PathLike, timeout: float) -> float:
    """Wait until the guard of every dead run registered in ``workdir`` has
    stopped that run's jobs; returns the seconds waited.

    A guard whose Snakemake still runs is left alone (a living run; Snakemake's
    lock keeps a second run out of its workdir). A file whose guard is gone is
    removed. Raises :class:`TimeoutError` if a guard does not end in
    ``timeout`` seconds.
    """
    started = time.monotonic()
    for path in sorted((Path(workdir) / GUARDS_DIR).glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being written by a run that is starting, or removed just now
        if same_process(record.get("snakemake_pid"), record.get("snakemake_started")):
            continue
        guard = record.get("guard_pid"), record.get("guard_started")
        if same_process(*guard):
            log.info(
                f"matensemble: the snakemake run with pid {record.get('snakemake_pid')} in "
                "this directory was killed; waiting until its guard has stopped its jobs."
            )
            deadline = time.monotonic() + timeout
            while same_process(*guard):
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"the guard (pid {guard[0]}) of the killed snakemake run with pid "
                        f"{record.get('snakemake_pid')} did not stop that run's jobs within "
                        f"{timeout:g} s"
                    )
                time.sleep(0.05)
        with contextlib.suppress(OSError):
            path.unlink()
    return time.monotonic() - started
