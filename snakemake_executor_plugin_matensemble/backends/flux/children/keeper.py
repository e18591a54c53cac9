"""The task a child's broker runs under, on each node of the child: it leaves
no process of the child behind.

When a broker dies, the job shells of the child's jobs on that node lose it and
exit, but their tasks (in process groups of their own) live on, reparented to
init, unless cgroups of the enclosing instance reap them; under ``srun ... flux
start`` nothing does. Those orphans would hold the node's cores and GPUs and
could run a job twice once Snakemake retries it. This keeper makes itself the
*subreaper* of the broker (``PR_SET_CHILD_SUBREAPER``), so that every orphan
of the child on the node becomes its child; when the broker exits, or the
child's job is signalled (SIGTERM from ``flux cancel`` or a sibling keeper), it
stops the broker and kills every remaining descendant, then exits with the
broker's status. A broker that dies on its own takes the whole child with it:
its keeper SIGTERMs the keepers on the child's other nodes through the
enclosing instance (``flux job kill``; a job exception such as the shell's
``exit-on-error`` would SIGKILL them, leaving their nodes' orphans alive).

Run by path (standard library only): ``python keeper.py COMMAND...``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
#: Seconds a signalled broker gets to shut down its jobs before the rest is killed.
GRACE_S = 2.0


def become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def own_children() -> list[int]:
    """Processes whose parent is this one (orphans of the child land here)."""
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == me:
            found.append(int(entry))
    return found


def kill_descendants() -> None:
    """SIGKILL every descendant: killed parents hand their children to this
    subreaper, so repeat until none is left; reap them all."""
    while True:
        children = own_children()
        if not children:
            return
        for pid in children:
            for kill in (os.killpg, os.kill):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    kill(pid, signal.SIGKILL)
        reap(blocking=True)


def reap(blocking: bool) -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, 0 if blocking else os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        blocking = False


def stop_siblings() -> None:
    """SIGTERM every task of this child's job (the keepers on its other nodes),
    through the enclosing instance, so that each cleans up its node."""
    jobid = os.environ.get("FLUX_JOB_ID")
    if not jobid:
        return
    try:
        subprocess.run(
            ["flux", "job", "kill", "--signal=SIGTERM", jobid],
            timeout=10,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        sys.stderr.write("keeper: could not signal the child's other nodes\n")


def main(argv: list[str]) -> int:
    if not argv:
        sys.stderr.write("keeper: no command\n")
        return 2
    become_subreaper()
    broker = subprocess.Popen(argv, close_fds=False)  # keep PMI_FD for the broker
    signalled: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda number, _frame: signalled.append(number))
    while broker.poll() is None and not signalled:
        time.sleep(0.1)
    if signalled and broker.poll() is None:
        broker.send_signal(signal.SIGTERM)
        try:
            broker.wait(timeout=GRACE_S)
        except subprocess.TimeoutExpired:
            broker.kill()
    status = broker.wait()
    if not signalled:  # the broker died on its own: end the whole child, not just this node
        stop_siblings()
    kill_descendants()
    return status if status >= 0 else 128 - status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
