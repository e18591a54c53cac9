"""The keeper a child broker runs under leaves no process behind: orphans in
process groups of their own (as Flux job tasks are) are killed when the
"broker" exits on its own and when the keeper is SIGTERMed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from snakemake_executor_plugin_matensemble.backends.flux.children import keeper

KEEPER = [sys.executable, keeper.__file__]
# A stand-in broker: starts a task in a new session (like a job shell's task),
# records its pid, and exits (or waits) leaving it behind.
ORPHAN_MAKER = "setsid sleep 60 & echo $! > {pidfile}; {then}"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie waiting for its reaper is gone for our purposes
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


def wait_pidfile(path: Path) -> int:
    for _ in range(100):
        if path.exists() and path.read_text().strip():
            return int(path.read_text())
        time.sleep(0.05)
    raise AssertionError(f"{path} never written")


def test_orphans_of_a_broker_that_exits_on_its_own_are_killed(tmp_path: Path) -> None:
    pidfile = tmp_path / "orphan.pid"
    command = ORPHAN_MAKER.format(pidfile=pidfile, then="sleep 0.5; exit 3")
    env = {k: v for k, v in os.environ.items() if k != "FLUX_JOB_ID"}
    done = subprocess.run([*KEEPER, "sh", "-c", command], env=env, timeout=30)
    orphan = wait_pidfile(pidfile)
    assert done.returncode == 3  # the broker's status
    assert not alive(orphan)


def test_a_sigtermed_keeper_stops_the_broker_and_its_orphans(tmp_path: Path) -> None:
    pidfile = tmp_path / "orphan.pid"
    command = ORPHAN_MAKER.format(pidfile=pidfile, then="exec sleep 60")
    proc = subprocess.Popen([*KEEPER, "sh", "-c", command])
    orphan = wait_pidfile(pidfile)
    assert alive(orphan)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) != 0
    assert not alive(orphan)
