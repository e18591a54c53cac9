"""SIGTERM cancels the run like Ctrl-C, and Ctrl-C always does: every job is
stopped, none left running.

Snakemake's own SIGTERM handler waits for running jobs, which for a packer
holding a queue means starting all of them.

SIGINT gets a handler that raises KeyboardInterrupt, as Python's default one
does, but is not Python's default one: ``asyncio.Runner`` (which Snakemake's
scheduler thread runs its coroutines in, many times per job) replaces the
*default* handler, while it runs, with one that only cancels the running
task, and a task that goes on after a cancellation then loses the Ctrl-C.
With this handler in place the Runner leaves SIGINT alone and the
KeyboardInterrupt is raised wherever the main thread is.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

_installed = False
_cancelling = False


def _interrupt(signum: int, frame: Any) -> None:
    global _cancelling
    if _cancelling and signum != signal.SIGINT:
        # already cancelling: a second SIGTERM or SIGHUP (a Flux broker stopped
        # by a signal sends its initial program both) must not cut the cancel short
        return
    _cancelling = True
    raise KeyboardInterrupt(f"received signal {signal.Signals(signum).name}")


def cancel_on_sigterm() -> None:
    """Turn SIGTERM (SIGINT where Python's default handler has it, SIGHUP where
    nothing handles it) into
    KeyboardInterrupt, Snakemake's cancel path; once, from the main thread only
    (elsewhere it does nothing)."""
    global _installed
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    _installed = True
    signal.signal(signal.SIGTERM, _interrupt)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _interrupt)
    if signal.getsignal(signal.SIGHUP) is signal.SIG_DFL:
        # a Flux broker stopped by a signal (scancel of its srun step) hangs up
        # its initial program: cancel cleanly too (nohup's SIG_IGN is kept)
        signal.signal(signal.SIGHUP, _interrupt)
