"""The Flux backend: every job a Flux job, all through ONE ``FluxExecutor``.

* :mod:`.options`: the Flux settings of a run (shell options the plugin manages
  itself are refused).
* :mod:`.resources`: per rank the cores and GPU ids that are up, from Flux's R;
  Flux's resource journal events (drain, undrain, offline, online, a new
  expiration) as :class:`~..base.ResourceEvent`.
* :mod:`.jobspec`: the ``JobspecV1`` of a job on the packer's placement (shape,
  walltime, cwd, environment, log, name, ``user.snakemake`` attributes (the
  job's owner: run, Snakemake's host and pid, workdir, jobid, rule, outputs), per-task
  CPU/GPU affinity, a ``ranks`` constraint pinning it where the packer chose).
* :mod:`.outcome`: a finished future as a :class:`~..base.JobFinished`.
* :mod:`.leftovers`: who owns a Flux job, whether its run is alive, and
  whether a new run adopts, cancels or leaves it.
* :mod:`.backend`: the stateful part (one ``FluxExecutor``, waiting,
  cancelling), with its mixins :mod:`.submission` (submission, look-ahead,
  withdrawing jobs pinned to drained ranks), :mod:`.callbacks` (guarded
  future callbacks that wake the dispatcher; a dead executor's recovery),
  :mod:`.adoption` (settling what dead runs left behind; re-attaching),
  :mod:`.purge` (the run's inactive jobs) and :mod:`.resource_journal`.
"""

from .backend import FluxBackend
from .jobspec import build_jobspec, job_name, urgency
from .options import MANAGED_SHELL_OPTIONS, FluxOptions, parse_shell_options
from .outcome import LOST_INSTANCE_ERRNOS, outcome
from .resources import expiration_from_rset, nodes_from_rset, reserve_own_cores, resource_event

__all__ = [
    "LOST_INSTANCE_ERRNOS",
    "MANAGED_SHELL_OPTIONS",
    "FluxBackend",
    "FluxOptions",
    "build_jobspec",
    "expiration_from_rset",
    "job_name",
    "nodes_from_rset",
    "outcome",
    "parse_shell_options",
    "reserve_own_cores",
    "resource_event",
    "urgency",
]
