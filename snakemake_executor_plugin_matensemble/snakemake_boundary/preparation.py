"""Job preparation: Snakemake's own code prepares a job (or a group's members)
and builds the process its local executor would start, captured unstarted.

The direct path calls the code Snakemake's local executor runs for a job:
``job_args_and_prepare`` (prepares the job and builds the rule function's
arguments) and ``run_wrapper`` (calls the rule function, which formats the
command with the rule's own module namespace and config, and calls
``shell()``, which builds the final command: strict-mode prefix,
conda/apptainer/env-modules wrapping, thread and TMPDIR variables). The one
process that ``shell()`` would start is captured instead of started
(:mod:`.capture`), and the backend launches it on the job's cores and GPUs.
"""

from __future__ import annotations

import heapq
import inspect
from dataclasses import dataclass
from typing import Any

from . import facts, patches
from .capture import CapturedProcess, remove_files, written_scripts


class NotDirect(Exception):
    """The job cannot run directly; the reason says why (it runs per job instead)."""


@dataclass(frozen=True)
class RunSet:
    """Members of a group that Snakemake starts together, and the positions
    (in the group's run order) of the sets they wait for."""

    jobs: list[Any]
    after: tuple[int, ...]


def is_unknown_yet(value: Any) -> bool:
    """True for Snakemake's placeholder of a value it evaluates later (``<TBD>``)."""
    try:
        from snakemake.common.tbdstring import TBDString
    except ImportError:  # pragma: no cover - older layouts
        return str(value) == "<TBD>"
    return isinstance(value, TBDString)


class _LocalExecutorContext:
    """What ``LocalExecutor.job_args_and_prepare`` reads of its executor."""

    def __init__(self, workflow: Any):
        self.workflow = workflow
        self.dag = workflow.dag


def capture_command(workflow: Any, job: Any, resources: Any) -> CapturedProcess:
    """Prepare ``job`` and build its process exactly as Snakemake's local
    executor would (with ``resources`` evaluated as it evaluates them),
    without starting it. Raises :class:`NotDirect` when the job cannot run
    this way (nothing was started then); exceptions from the rule itself (a
    bad format string, a failing params function) are Snakemake's and
    propagate."""
    from snakemake.executors.local import Executor as LocalExecutor
    from snakemake.executors.local import run_wrapper

    unknown = sorted(name for name, value in resources.items() if is_unknown_yet(value))
    if unknown:  # e.g. computed from inputs an earlier member of its group makes
        raise NotDirect(f"its resources {', '.join(unknown)} are not known before it runs")
    args = LocalExecutor.job_args_and_prepare(_LocalExecutorContext(workflow), job)
    arguments = inspect.signature(run_wrapper).bind(*args).arguments
    if arguments.get("benchmark") or arguments.get("shadow_dir") or arguments.get("edit_notebook"):
        raise NotDirect("it has a benchmark, a shadow directory or an edited notebook")
    cleanup_scripts = bool(arguments["cleanup_scripts"])
    arguments["cleanup_scripts"] = False  # the plugin removes them after the job
    arguments["resources"] = resources
    capture = patches.install_capture()
    with capture.capturing() as captured:
        run_wrapper(**arguments)
    if len(captured) != 1 or captured[0] is None:
        remove_files(captured)
        raise NotDirect(f"it started {len(captured)} processes instead of one shell command")
    process = captured[0]
    if cleanup_scripts:
        process.cleanup.extend(written_scripts(process.command))
    return process


def run_order(group: Any, pipe_groups: bool, version: str) -> list[RunSet]:
    """The members of ``group`` as Snakemake runs them, in sets: a set is one
    member, or one of Snakemake's pipe groups (members joined by ``pipe()``
    or ``service()`` files), whose members Snakemake starts all at once. Sets
    are in dependency order (ties in Snakemake's topological order), each
    with the sets whose outputs it reads."""
    order = [job for level in group.toposorted for job in level]
    if not pipe_groups:
        if any(facts.is_pipe(job) or facts.is_service(job) for job in order):
            raise NotDirect(f"Snakemake {version}'s pipe groups are unknown here")
        sets = {job: [job] for job in order}
    else:
        sets = {}
        for job in order:
            key = job if job.pipe_group is None else job.pipe_group
            sets.setdefault(key, []).append(job)
    made_by = {str(f): key for key, jobs in sets.items() for job in jobs for f in job.output}
    needs = {
        key: {made_by[str(f)] for job in jobs for f in job.input if str(f) in made_by} - {key}
        for key, jobs in sets.items()
    }
    ordered = _in_dependency_order(list(sets), needs)
    index = {key: position for position, key in enumerate(ordered)}
    return [
        RunSet(sets[key], tuple(sorted(index[other] for other in needs[key]))) for key in ordered
    ]


def _in_dependency_order(keys: list[Any], needs: dict[Any, set[Any]]) -> list[Any]:
    """``keys``, each after all it needs; ties in the order of ``keys``."""
    position = {key: index for index, key in enumerate(keys)}
    waiting = {key: len(needs[key]) for key in keys}
    needed_by: dict[Any, list[Any]] = {key: [] for key in keys}
    for key in keys:
        for other in needs[key]:
            needed_by[other].append(key)
    ready = [position[key] for key in keys if not waiting[key]]
    heapq.heapify(ready)
    ordered = []
    while ready:
        key = keys[heapq.heappop(ready)]
        ordered.append(key)
        for user in needed_by[key]:
            waiting[user] -= 1
            if not waiting[user]:
                heapq.heappush(ready, position[user])
    if len(ordered) < len(keys):  # pragma: no cover - Snakemake's DAG has no cycles
        raise NotDirect("its members' pipe groups depend on each other in a cycle")
    return ordered


def temp_files_made(group: Any) -> list[tuple[Any, Any]]:
    """(member, file) for every ``temp()`` output of ``group``."""
    from snakemake.io import is_flagged

    return [(job, f) for job in group.jobs for f in job.output if is_flagged(f, "temp")]


def removable_temp_files(
    workflow: Any, group: Any, produced: list[tuple[Any, Any]]
) -> list[tuple[str, list[Any]]]:
    """Of ``produced``, the temp files no job outside ``group`` needs, each
    with the members that make or read it (``DAG.handle_temp``'s rules)."""
    if workflow.storage_settings.notemp:
        return []
    dag, members = workflow.dag, set(group.jobs)
    removable = []
    for producer, f in produced:
        if f in dag.targetfiles or f in dag.derived_targetfiles:
            continue
        readers = [
            job
            for job, files in dag.depending[producer].items()
            if f in files and dag.needrun(job) and not dag.finished(job)
        ]
        if any(job not in members for job in readers):
            continue
        if not readers and (
            producer.is_checkpoint
            or (producer in dag.targetjobs and producer.rule.name != workflow.default_target)
        ):
            continue
        removable.append((str(f), [producer, *readers]))
    return removable
