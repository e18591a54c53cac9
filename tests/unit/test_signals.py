"""Ctrl-C and SIGTERM reach Snakemake's cancel path even inside asyncio.

Each case runs in its own interpreter (signal handlers are process-wide)."""

from __future__ import annotations

import subprocess
import sys

import pytest

# A coroutine that goes on after being cancelled, run by asyncio.Runner as
# Snakemake's scheduler thread runs its coroutines; the signal arrives meanwhile.
SCRIPT = """
import asyncio, os, signal, threading, time
from snakemake_executor_plugin_matensemble.signals import cancel_on_sigterm
if {install}:
    cancel_on_sigterm()

async def goes_on_after_cancel():
    for _ in range(50):
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            pass

threading.Timer(0.1, os.kill, (os.getpid(), signal.{signal})).start()
try:
    with asyncio.Runner() as runner:
        runner.run(goes_on_after_cancel())
    print("finished")
except KeyboardInterrupt:
    print("interrupted")
"""


def run(install: bool, signal: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(install=install, signal=signal)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout.strip() + done.stderr


def test_python_alone_loses_a_ctrl_c_inside_asyncio():
    # the failure this module guards against, shown with Python's default handler
    assert run(install=False, signal="SIGINT") == "finished"


@pytest.mark.parametrize("signal", ["SIGINT", "SIGTERM"])
def test_the_plugins_handlers_interrupt_inside_asyncio(signal):
    assert run(install=True, signal=signal) == "interrupted"
