"""Where CI installed Flux or Slurm on purpose, their tests may not skip.

``.ci/run`` installs a real Flux (and starts a one-node Slurm cluster) and sets
``MATENSEMBLE_REQUIRE_FLUX=1`` (``MATENSEMBLE_REQUIRE_SLURM=1``). Then a test
marked ``flux`` (``slurm``) that skips is reported as a failure with its skip
reason, so the real-Flux and Slurm paths can never drop out of CI unnoticed.
Everywhere else (a laptop without Flux) they skip with the reason, as before.

Tests interrupt snakemake as a user's Ctrl-C does (SIGINT). A shell that starts
the tests in the background (``nohup .ci/run &``) makes them ignore SIGINT, and
every process they start inherits that; the session restores Python's own
handler, so the processes the tests start get SIGINT as a terminal gives it.
"""

from __future__ import annotations

import os
import signal

import pytest

pytest_plugins = ["pytester"]

REQUIRED = {"flux": "MATENSEMBLE_REQUIRE_FLUX", "slurm": "MATENSEMBLE_REQUIRE_SLURM"}


def pytest_configure(config):
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def required_markers() -> set[str]:
    return {marker for marker, var in REQUIRED.items() if os.environ.get(var) == "1"}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or getattr(report, "wasxfail", None) is not None:
        return
    required = required_markers() & {mark.name for mark in item.iter_markers()}
    if required:
        marker = sorted(required)[0]
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = (
            f"{REQUIRED[marker]}=1 ({marker} was installed for this run) but this "
            f"{marker} test skipped: {reason}"
        )
