"""The Flux jobspec of one job on one placement (pure)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ...packing.nodes import Placement
from ..base import LaunchSpec
from .bypass import BYPASS_ATTRIBUTE
from .leftovers import OWNER_ATTRIBUTE
from .options import FluxOptions


def job_name(name: str) -> str:
    """Flux job names are shown in one column: keep them short and printable."""
    printable = "".join(c if c.isprintable() and not c.isspace() else "_" for c in name)
    return printable[:80]


def urgency(options: FluxOptions, spec: LaunchSpec) -> int:
    """The setting if given, else Flux's default 16 moved by the job's priority."""
    if options.urgency is not None:
        return options.urgency
    return max(1, min(31, 16 + spec.priority)) if spec.priority else 16


def build_jobspec(
    JobspecV1: Any,
    spec: LaunchSpec,
    placement: Placement,
    options: FluxOptions,
    run_id: str = "",
    depends_on: int | None = None,
    owner: Mapping[str, Any] | None = None,
    given_R: Mapping[str, Any] | None = None,
) -> Any:
    """The ``JobspecV1`` for ``spec`` on ``placement`` (setters only, so that
    flux-python versions without the newer keywords work too).

    The duration is the request's walltime in seconds (Flux's unit; Snakemake's
    ``runtime`` is minutes and was converted by the request). ``depends_on``:
    the Flux id of a running job whose resources this one takes when it ends
    (look-ahead, an ``afterany`` dependency). ``owner``: who the job belongs
    to (:func:`.leftovers.owner_identity`), with the job's own attributes in
    ``user.snakemake``, so that a later run finds what a dead one left behind.
    ``given_R``: the placement as R (:func:`.bypass.bypass_R`), for Flux's
    ``alloc-bypass``: the scheduler never matches the job, so no rank
    constraint is needed.
    """
    request = spec.request
    command = [spec.shell, "-c", spec.command]
    nodes = len(placement.shares) if (request.nodes or request.exclusive) else None
    if request.exclusive:
        nodes = request.nodes or len(placement.shares)
    if spec.per_task or request.tasks == 1:
        jobspec = JobspecV1.from_command(
            command,
            num_tasks=request.tasks if spec.per_task else 1,
            cores_per_task=request.cores_per_task if spec.per_task else request.total_cores,
            gpus_per_task=(request.gpus_per_task if spec.per_task else request.total_gpus) or None,
            num_nodes=nodes,
            exclusive=request.exclusive,
        )
    else:
        # The command starts its own ranks ({resources.mpi} -n {resources.tasks}
        # or a per-job Snakemake process): give it a Flux instance of that size,
        # in which `flux run` (and single-node mpiexec) work.
        jobspec = JobspecV1.from_nest_command(
            command,
            num_slots=request.tasks,
            cores_per_slot=request.cores_per_task,
            gpus_per_slot=request.gpus_per_task or None,
            num_nodes=nodes,
            exclusive=request.exclusive,
        )
    if request.walltime_s is not None:
        jobspec.duration = request.walltime_s
    jobspec.cwd = spec.cwd
    jobspec.environment = dict(spec.env)
    jobspec.stdout = spec.log_path
    jobspec.setattr("system.job.name", job_name(spec.name))
    jobspec.setattr(
        OWNER_ATTRIBUTE,
        {
            **dict(owner or {}),
            "run": run_id,
            "key": spec.key,
            "name": spec.name,
            **dict(spec.attributes),
        },
    )
    if options.queue:
        jobspec.setattr("system.queue", options.queue)
    if options.bank:
        jobspec.setattr("system.bank", options.bank)
    if given_R is not None:
        jobspec.setattr(BYPASS_ATTRIBUTE, dict(given_R))
    elif options.pin_ranks:
        ranks = ",".join(str(rank) for rank in placement.ranks)
        jobspec.setattr("system.constraints", {"ranks": [ranks]})
    if depends_on is not None:
        jobspec.setattr("system.dependencies", [{"scheme": "afterany", "value": str(depends_on)}])
    jobspec.setattr_shell_option("cpu-affinity", "per-task")
    if request.gpus_per_task:
        jobspec.setattr_shell_option("gpu-affinity", "per-task")
    if options.pmi:
        jobspec.setattr_shell_option("pmi", options.pmi)
    for key, value in options.shell_options:
        jobspec.setattr_shell_option(key, option_value(value))
    return jobspec


def option_value(value: str) -> Any:
    """Shell option values as JSON where they parse (numbers, booleans)."""
    try:
        return json.loads(value)
    except ValueError:
        return value
