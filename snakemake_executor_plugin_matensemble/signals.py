"""SIGTERM cancels the run like Ctrl-C: every job is stopped, none left running.

Snakemake's own SIGTERM handler waits for running jobs, which for a packer
holding a queue means starting all of them.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

_installed = False


def cancel_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt (Snakemake's cancel path); once,
    from the main thread only (elsewhere it does nothing)."""
    global _installed
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    _installed = True

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"received signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, interrupt)
