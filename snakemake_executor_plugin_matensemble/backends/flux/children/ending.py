"""Ending a lost child before its jobs are reported: a retry never runs beside them.

When one broker of a child dies, its keeper ends the rest of the child, but
the child's jobs on its other nodes live on for the keepers' grace (and would
complete, if they were about to). The router therefore cancels the child's job
in the enclosing instance and waits until Flux says it is inactive (every
keeper has exited, having killed every process of the child on its node)
before it fails the child's jobs, which Snakemake may then retry elsewhere.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

log = logging.getLogger("snakemake.logging.matensemble.flux")
POLL_S = 0.1


def end_child_job(flux: Any, handle: Any, jobid: int, reason: str, timeout: float) -> bool:
    """Cancel child job ``jobid`` (if it still runs) and wait up to ``timeout``
    seconds until it is inactive; False (logged) if it is not by then."""
    with contextlib.suppress(OSError):  # already inactive
        flux.job.cancel(handle, jobid, reason)
    deadline = time.monotonic() + timeout
    while flux.job.get_job(handle, jobid)["state"] != "INACTIVE":
        if time.monotonic() > deadline:
            log.warning(
                f"matensemble: the lost child's Flux job {jobid} is still active {timeout:g} s "
                "after it was cancelled; its jobs are reported failed anyway."
            )
            return False
        time.sleep(POLL_S)
    return True
