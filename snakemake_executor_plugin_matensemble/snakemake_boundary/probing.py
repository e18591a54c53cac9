"""The start-up probe: every Snakemake internal the plugin uses, checked once.

Where one is missing or changed, the feature that needs it is switched off
(:class:`Capabilities`), and the jobs concerned take Snakemake's per-job
command (slower, never wrong).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
from dataclasses import dataclass
from typing import Any

from . import patches
from .facts import JOB_FACTS

#: Arguments of Snakemake's ``run_wrapper`` that the direct path sets itself.
RUN_WRAPPER_ARGS = ("resources", "cleanup_scripts", "benchmark", "shadow_dir", "edit_notebook")


@dataclass(frozen=True)
class Capabilities:
    """What this Snakemake lets the plugin do itself (False: use the fallback)."""

    #: run jobs without a per-job Snakemake process (capture of shell())
    direct: bool = False
    #: read what decides a job's path (rule kind, shadow, pipes, storage, ...;
    #: :data:`.facts.JOB_FACTS`); without it every job runs per job
    job_facts: bool = False
    #: run a group's members directly (prepared together, in Snakemake's order)
    group_capture: bool = False
    #: check every job of the DAG before anything starts
    upfront_check: bool = False
    #: evaluate ``tmpdir`` and the other resources as the local executor does
    local_resources: bool = False
    #: compute group resources against the allocation's largest node
    group_layering: bool = False
    #: run a group's pipe() and service() members together (Snakemake's pipe groups)
    pipe_groups: bool = False
    #: shorten the pause between a group job's levels in its post-processing
    #: (absent: Snakemake's own 0.1 s per level stays; slower, same results)
    group_level_pause: bool = False
    #: find a group's temp() files that no job outside it needs (absent: such
    #: groups run through Snakemake's per-job command, which removes them itself)
    group_temp: bool = False
    #: tell the rules whose output goes through the between-workflow cache
    #: (absent: every job runs per job, as a cached one must)
    output_cache: bool = False
    #: pass a job's Snakemake ``priority`` on to the backend (absent: all 0;
    #: the order of ready jobs then is Snakemake's own, same results)
    job_priority: bool = False
    #: what is missing, one line each (empty when everything is there)
    problems: tuple[str, ...] = ()


def _check(problems: list[str], what: str, test: Any) -> bool:
    try:
        ok = bool(test())
    except Exception as error:
        ok = False
        what = f"{what} ({type(error).__name__}: {error})"
    if not ok:
        problems.append(what)
    return ok


def _names_used(function: Any) -> set[str]:
    """Global and attribute names ``function``'s code uses (its bytecode, not its source)."""
    code = inspect.unwrap(function).__code__
    names = set(code.co_names)
    for const in code.co_consts:
        if inspect.iscode(const):  # nested code (comprehensions, closures)
            names.update(const.co_names)
    return names


def missing_facts() -> list[str]:
    """The entries of :data:`.facts.JOB_FACTS` this Snakemake lacks."""
    from snakemake.io import _IOFile
    from snakemake.jobs import Job
    from snakemake.rules import Rule

    rule = Rule("matensemble_probe", None, None, None)
    owners = {"Job": Job, "IOFile": _IOFile}
    missing = []
    for owner, name, _ in JOB_FACTS:
        found = hasattr(rule, name) if owner == "Rule" else hasattr(owners[owner], name)
        if not found:
            missing.append(f"{owner}.{name}")
    return missing


def _direct_available(problems: list[str]) -> bool:
    def run_wrapper_ok() -> bool:
        from snakemake.executors.local import Executor as LocalExecutor
        from snakemake.executors.local import run_wrapper

        names = inspect.signature(run_wrapper).parameters
        return callable(LocalExecutor.job_args_and_prepare) and all(
            name in names for name in RUN_WRAPPER_ARGS
        )

    return _check(
        problems, "snakemake.executors.local.run_wrapper / job_args_and_prepare", run_wrapper_ok
    ) and _check(
        problems, "snakemake.shell.sp (subprocess of shell())", patches.shell_subprocess_known
    )


def probe() -> Capabilities:
    """Check the Snakemake internals the plugin uses; never raises."""
    problems: list[str] = []
    # import Snakemake's modules in their own order (a cold "snakemake.dag" first
    # would be a circular import); in a run they are all loaded already
    _check(problems, "snakemake.api", lambda: importlib.import_module("snakemake.api"))
    direct = _direct_available(problems)
    facts = _check_facts(problems)

    def needrun_ok() -> bool:
        from snakemake.dag import DAG

        return callable(DAG.needrun_jobs)

    def expand_ok() -> bool:
        from snakemake.rules import Rule

        return "skip_evaluation" in inspect.signature(Rule.expand_resources).parameters

    def layering_ok() -> bool:
        from snakemake.resources import GroupResources

        names = inspect.signature(GroupResources.basic_layered).parameters
        return {"toposorted_jobs", "constraints", "run_local"} <= set(names)

    def group_capture_ok() -> bool:
        jobs_module = importlib.import_module("snakemake.jobs")
        names = inspect.signature(jobs_module.wait_for_files).parameters
        return direct and next(iter(names)) == "files"

    def pipe_groups_ok() -> bool:
        from snakemake.jobs import Job

        return direct and "pipe_group" in _names_used(Job.__init__)

    def level_pause_ok() -> bool:
        jobs_module = importlib.import_module("snakemake.jobs")
        postprocess = jobs_module.GroupJob.postprocess
        return (
            jobs_module.asyncio in (asyncio, patches.group_asyncio)
            and {"asyncio", "sleep"} <= _names_used(postprocess)
            and 0.1 in inspect.unwrap(postprocess).__code__.co_consts
        )

    def group_temp_ok() -> bool:
        from snakemake.dag import DAG
        from snakemake.io import is_flagged
        from snakemake.jobs import Job

        return (
            callable(is_flagged)
            and callable(DAG.needrun)
            and callable(DAG.finished)
            and isinstance(Job.is_checkpoint, property)
        )

    return Capabilities(
        direct=direct,
        job_facts=facts,
        # (without the job facts no job is direct: no line of their own)
        group_capture=_check(
            problems, "snakemake.jobs.wait_for_files(files, ...)", group_capture_ok
        )
        and facts,
        upfront_check=_check(problems, "DAG.needrun_jobs", needrun_ok),
        local_resources=_check(problems, "Rule.expand_resources(skip_evaluation)", expand_ok),
        group_layering=_check(problems, "GroupResources.basic_layered", layering_ok),
        pipe_groups=_check(problems, "Job.pipe_group", pipe_groups_ok) and facts,
        group_level_pause=_check([], "GroupJob.postprocess's level pause", level_pause_ok),
        group_temp=_check(problems, "DAG.depending / needrun / targetfiles", group_temp_ok),
        output_cache=_check(
            problems, "Workflow.get_cache_mode / Rule.cache (the output cache)", _cache_ok
        ),
        job_priority=_check([], "Job.priority", _priority_ok),
        problems=tuple(problems),
    )


def _cache_ok() -> bool:
    """Snakemake < 9.16 asks the workflow (``get_cache_mode``); later ones the rule."""
    from snakemake.rules import Rule
    from snakemake.workflow import Workflow

    if hasattr(Workflow, "get_cache_mode"):
        return True
    fields = getattr(Workflow, "__dataclass_fields__", {})
    return "workflow_settings" in fields and hasattr(Rule("p", None, None, None), "cache")


def _priority_ok() -> bool:
    from snakemake.jobs import Job

    return isinstance(Job.priority, property)


def _check_facts(problems: list[str]) -> bool:
    try:
        missing = missing_facts()
    except Exception as error:
        missing = [f"snakemake.jobs.Job / rules.Rule ({type(error).__name__}: {error})"]
    problems.extend(missing)
    return not missing
