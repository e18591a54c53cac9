"""Flux's ``alloc-bypass``: the job's R given in its jobspec, so that the
scheduler never matches it.

The packer already chose every job's ranks, cores and GPUs. Where the run's
user owns the Flux instance (the normal case inside ``flux alloc``/``flux
batch`` or ``srun flux start``), the ``alloc-bypass`` jobtap plugin of
flux-core lets the jobspec carry that placement as R
(``attributes.system.alloc-bypass.R``): the job manager allocates it as given,
with no scheduler round and no match. On 9,408 fake nodes a Fluxion match of
a rank-pinned job costs tens of ms of broker CPU, so this is what keeps the
plugin at Flux's own rate on a full machine (see docs/performance.md).

The scheduler does not see bypassed jobs: every job of the run is bypassed or
none is (:class:`~.backend.FluxBackend` decides once, at discovery). R's
expiration is the end of the job's walltime (job-exec enforces R's
expiration, not the jobspec's duration), never past the instance's own end.
A successor submitted ahead (look-ahead, ``afterany`` on a running job) starts
when its predecessor ends, which is unknown at submission: its R ends its
walltime after the latest end of its predecessor (its R's expiration +
:data:`KILL_GRACE_S`), so it gets at least its walltime, and at most the
time its predecessor left unused more.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Mapping
from typing import Any

from ...cpulist import format_cpu_list
from ...packing.nodes import Placement

log = logging.getLogger("snakemake.logging.matensemble.flux")

#: The jobspec attribute the ``alloc-bypass`` jobtap plugin reads.
BYPASS_ATTRIBUTE = "system.alloc-bypass.R"
#: The jobtap plugin (shipped with flux-core) and the name it registers.
BYPASS_PLUGIN, BYPASS_NAME = "alloc-bypass.so", "alloc-bypass"
#: The names a loaded ``alloc-bypass`` goes by in ``job-manager.jobtap``'s list
#: (flux-core 0.88 lists it by the file it was loaded from, ``alloc-bypass.so``).
BYPASS_LISTED = frozenset({BYPASS_NAME, BYPASS_PLUGIN})
#: Seconds added to a bypassed job's walltime for the moments between
#: building its R and its start (a scheduled job's R starts at its start).
START_GRACE_S = 2.0
#: Seconds a job may take to end after its R expired (a successor submitted
#: ahead, with an ``afterany`` dependency, starts only then).
KILL_GRACE_S = 30.0


def enable_bypass(handle: Any) -> str | None:
    """Make sure ``alloc-bypass`` is loaded in the instance of ``handle``.

    Returns None when jobs may be bypassed, else why not (the normal,
    scheduled path is then taken): the instance belongs to another user, or
    the jobtap plugin cannot be loaded. Loaded already (by an earlier run in
    the same instance) is fine: every later run bypasses too.
    """
    try:
        owner = int(handle.attr_get("security.owner"))
    except (OSError, ValueError) as error:
        return f"the instance's owner is unknown ({error})"
    if owner != os.getuid():
        return f"the Flux instance belongs to uid {owner}, not to this user"
    try:
        loaded = handle.rpc("job-manager.jobtap", {"query_only": True}).get()["plugins"]
        if BYPASS_LISTED.isdisjoint(os.path.basename(str(name)) for name in loaded):
            handle.rpc("job-manager.jobtap", {"load": BYPASS_PLUGIN}).get()
    except OSError as error:
        if error.errno != errno.EEXIST:  # EEXIST: loaded meanwhile, under another name
            return f"the {BYPASS_PLUGIN} jobtap plugin could not be loaded ({error})"
    except (KeyError, TypeError) as error:
        return f"the {BYPASS_PLUGIN} jobtap plugin could not be loaded ({error})"
    return None


def bypass_R(
    placement: Placement,
    hostnames: Mapping[int, str],
    now: float,
    walltime_s: float | None,
    instance_end: float | None,
    latest_start: float | None = None,
) -> dict[str, Any]:
    """The Rv1 resource set of ``placement``: exactly its ranks, cores and GPUs.

    It starts ``now``; its expiration is the walltime (+ :data:`START_GRACE_S`)
    after ``latest_start`` (a successor submitted ahead: the latest its
    predecessor lets it start; else ``now``), capped at ``instance_end``; with
    neither, 0 (no limit). So a job never expires before it could run its
    walltime, nor after the instance ends.
    """
    shares = sorted(placement.shares, key=lambda share: share.rank)
    lite = []
    for share in shares:
        children = {"core": format_cpu_list(share.cores)}
        if share.gpus:
            children["gpu"] = format_cpu_list(int(gpu) for gpu in share.gpus)
        lite.append({"rank": str(share.rank), "children": children})
    ends = [instance_end] if instance_end else []
    if walltime_s:
        ends.append(max(now, latest_start or now) + walltime_s + START_GRACE_S)
    return {
        "version": 1,
        "execution": {
            "R_lite": lite,
            "nodelist": [hostnames.get(share.rank, f"rank{share.rank}") for share in shares],
            "starttime": now,
            "expiration": min(ends) if ends else 0.0,
        },
    }
