"""The one place that reaches into Snakemake beyond snakemake-interface-executor-plugins.

Everything else in the plugin talks to Snakemake through the executor-plugin
interface or through this module. At start-up :func:`probe` checks every
internal used here (names, signatures); where one is missing or changed, the
feature that needs it is switched off and the jobs concerned run through
Snakemake's own per-job command (slower, never wrong), with one warning that
names the Snakemake version.

The direct path (:meth:`SnakemakeBoundary.capture_command`) calls Snakemake's
own code for a job, the code its local executor runs: ``job_args_and_prepare``
(prepares the job and builds the rule function's arguments) and ``run_wrapper``
(calls the rule function, which formats the command with the rule's own module
namespace and config, and calls ``shell()``, which builds the final command:
strict-mode prefix, conda/apptainer/env-modules wrapping, thread and TMPDIR
variables). The one process that ``shell()`` would start is captured instead of
started, and the backend launches it on the job's cores and GPUs.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import heapq
import importlib
import inspect
import logging
import os
import re
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

log = logging.getLogger("snakemake.logging.matensemble.boundary")

#: Arguments of Snakemake's ``run_wrapper`` that the direct path sets itself.
_RUN_WRAPPER_ARGS = ("resources", "cleanup_scripts", "benchmark", "shadow_dir", "edit_notebook")


def snakemake_version() -> str:
    try:
        return metadata.version("snakemake")
    except metadata.PackageNotFoundError:  # pragma: no cover - snakemake runs us
        return "unknown"


@dataclass(frozen=True)
class Capabilities:
    """What this Snakemake lets the plugin do itself (False: use the fallback)."""

    #: run jobs without a per-job Snakemake process (capture of shell())
    direct: bool = False
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


def _direct_available(problems: list[str]) -> bool:
    def run_wrapper_ok() -> bool:
        from snakemake.executors.local import Executor as LocalExecutor
        from snakemake.executors.local import run_wrapper

        names = inspect.signature(run_wrapper).parameters
        return callable(LocalExecutor.job_args_and_prepare) and all(
            name in names for name in _RUN_WRAPPER_ARGS
        )

    def shell_ok() -> bool:
        module = _shell_module()
        return module.sp is subprocess or isinstance(module.sp, _CapturingSubprocess)

    return _check(
        problems, "snakemake.executors.local.run_wrapper / job_args_and_prepare", run_wrapper_ok
    ) and _check(problems, "snakemake.shell.sp (subprocess of shell())", shell_ok)


def probe() -> Capabilities:
    """Check the Snakemake internals this module uses; never raises."""
    problems: list[str] = []
    # import Snakemake's modules in their own order (a cold "snakemake.dag" first
    # would be a circular import); in a run they are all loaded already
    _check(problems, "snakemake.api", lambda: importlib.import_module("snakemake.api"))
    direct = _direct_available(problems)

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
        jobs_module = importlib.import_module("snakemake.jobs")
        return direct and "self.pipe_group = None" in inspect.getsource(jobs_module.Job.__init__)

    def level_pause_ok() -> bool:
        jobs_module = importlib.import_module("snakemake.jobs")
        postprocess = inspect.getsource(jobs_module.GroupJob.postprocess)
        return (
            jobs_module.asyncio in (asyncio, _group_asyncio)
            and inspect.getsource(jobs_module).count("asyncio.sleep(") == 1
            and "await asyncio.sleep(0.1)" in postprocess
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
        group_capture=_check(
            problems, "snakemake.jobs.wait_for_files(files, ...)", group_capture_ok
        ),
        upfront_check=_check(problems, "DAG.needrun_jobs", needrun_ok),
        local_resources=_check(problems, "Rule.expand_resources(skip_evaluation)", expand_ok),
        group_layering=_check(problems, "GroupResources.basic_layered", layering_ok),
        pipe_groups=_check(problems, "Job.pipe_group", pipe_groups_ok),
        group_level_pause=_check([], "GroupJob.postprocess's level pause", level_pause_ok),
        group_temp=_check(problems, "DAG.depending / needrun / targetfiles", group_temp_ok),
        problems=tuple(problems),
    )


def is_unknown_yet(value: Any) -> bool:
    """True for Snakemake's placeholder of a value it evaluates later (``<TBD>``)."""
    try:
        from snakemake.common.tbdstring import TBDString
    except ImportError:  # pragma: no cover - older layouts
        return str(value) == "<TBD>"
    return isinstance(value, TBDString)


# -- capture of the process shell() would start ---------------------------------


@dataclass
class CapturedProcess:
    """The process Snakemake's ``shell()`` would have started for a job."""

    command: str
    #: the shell that runs ``command`` (``shell -c command``)
    executable: str
    #: the complete environment shell() gave the process
    env: dict[str, str]
    #: files Snakemake would delete after the job (scripts written for it)
    cleanup: list[str] = field(default_factory=list)


class _FakeProcess:
    """What shell() gets back instead of a started process: it 'ran' at once."""

    pid = -1
    returncode = 0
    stdout = None

    def wait(self, timeout: float | None = None) -> int:
        return 0

    def poll(self) -> int:
        return 0


class _CapturingSubprocess:
    """Stands in for the ``subprocess`` module inside ``snakemake.shell``.

    In a thread that is capturing, the ``Popen`` that runs the job is recorded
    and not started; every other use (other threads, queries that read the
    output, such as a conda environment's Python version) goes to the real
    module.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def __getattr__(self, name: str) -> Any:
        return getattr(subprocess, name)

    @contextlib.contextmanager
    def capturing(self) -> Iterator[list[CapturedProcess | None]]:
        captured: list[CapturedProcess | None] = []
        self._local.captured = captured
        try:
            yield captured
        finally:
            self._local.captured = None

    def Popen(self, cmd: Any, *args: Any, **kwargs: Any) -> Any:
        captured = getattr(self._local, "captured", None)
        if captured is None or kwargs.get("stdout") == subprocess.PIPE:
            return subprocess.Popen(cmd, *args, **kwargs)
        if kwargs.get("shell") and isinstance(cmd, str) and not args:
            command, cleanup = _keep_long_command_script(cmd)
            captured.append(
                CapturedProcess(
                    command=command,
                    executable=kwargs.get("executable") or "/bin/sh",
                    env=dict(kwargs.get("env") or os.environ),
                    cleanup=cleanup,
                )
            )
        else:  # not a shell command line: not something the plugin can launch
            captured.append(None)
        return _FakeProcess()


_LONG_COMMAND_SCRIPT = re.compile(r"[^\s'\"]*\.snakemake/shell_tmp\.[^/\s'\"]+/script\.sh")


def _keep_long_command_script(command: str) -> tuple[str, list[str]]:
    """shell() runs a command too long for ``sh -c`` from a script that it
    deletes when the (captured) process ends: keep a copy for the real launch."""
    match = _LONG_COMMAND_SCRIPT.search(command)
    if match is None:
        return command, []
    os.makedirs(".snakemake", exist_ok=True)
    handle, copy = tempfile.mkstemp(dir=".snakemake", prefix="matensemble_sh.", suffix=".sh")
    with os.fdopen(handle, "w") as target, open(match.group(0)) as source:
        target.write(source.read())
    copy = os.path.abspath(copy)
    return command.replace(match.group(0), copy), [copy]


_capturing_subprocess = _CapturingSubprocess()
_install_lock = threading.Lock()


def _shell_module() -> Any:
    """The module ``snakemake.shell`` (its name is shadowed by the class ``shell``)."""
    return importlib.import_module("snakemake.shell")


def _install_capture() -> _CapturingSubprocess:
    module = _shell_module()
    with _install_lock:
        if module.sp is subprocess:
            module.sp = _capturing_subprocess
    return _capturing_subprocess


_SCRIPT_PATH = re.compile(r"[^\s'\"]*\.snakemake/scripts/[^\s'\")]+")


def _written_scripts(command: str) -> list[str]:
    """Scripts Snakemake wrote under .snakemake/scripts for ``command``."""
    return sorted({path for path in _SCRIPT_PATH.findall(command) if os.path.isfile(path)})


class _AsyncioWithLevelPause:
    """``asyncio`` as ``snakemake.jobs`` sees it, its one ``sleep`` (the pause
    between a group job's levels, checked by :func:`probe`) at most ``pause``."""

    def __init__(self) -> None:
        self.pause: float | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    async def sleep(self, delay: float, result: Any = None) -> Any:
        if self.pause is not None:
            delay = min(delay, self.pause)
        return await asyncio.sleep(delay, result)


_group_asyncio = _AsyncioWithLevelPause()


@dataclass(frozen=True)
class RunSet:
    """Members of a group that Snakemake starts together, and the positions
    (in the group's run order) of the sets they wait for."""

    jobs: list[Any]
    after: tuple[int, ...]


class NotDirect(Exception):
    """The job cannot run directly; the reason says why (it runs per job instead)."""


# -- the boundary --------------------------------------------------------------


class SnakemakeBoundary:
    """Snakemake's internals, as used by the plugin, checked once at start-up."""

    def __init__(self, workflow: Any, capabilities: Capabilities | None = None):
        self.workflow = workflow
        self.version = snakemake_version()
        self.caps = capabilities if capabilities is not None else probe()
        if self.caps.problems:
            log.warning(
                f"matensemble: Snakemake {self.version} differs from what this plugin "
                "knows (" + "; ".join(self.caps.problems) + "): the jobs concerned run "
                "through Snakemake's per-job command instead (slower, same results)."
            )

    # -- settings and scheduler ------------------------------------------------
    def keep_going(self) -> bool:
        return bool(getattr(self.workflow.execution_settings, "keep_going", False))

    def needrun_jobs(self) -> list[Any] | None:
        """Every job of the DAG that will run (None: not available)."""
        if not self.caps.upfront_check:
            return None
        return list(self.workflow.dag.needrun_jobs())

    def latency_wait(self) -> float:
        """``--latency-wait``: how long Snakemake waits for a job's missing input."""
        return float(getattr(self.workflow.execution_settings, "latency_wait", 5))

    def job_not_started(self, job: Any) -> None:
        """Tell Snakemake's scheduler that ``job`` was handed over but will not run."""
        self.workflow.scheduler.error_callback(job)

    def executor_failed(self, error: BaseException) -> None:
        self.workflow.scheduler.executor_error_callback(error)

    def uses_output_cache(self, job: Any) -> bool:
        """True when the rule's output goes through the between-workflow cache."""
        get_cache_mode = getattr(self.workflow, "get_cache_mode", None)
        if get_cache_mode is not None:  # Snakemake < 9.16
            return bool(get_cache_mode(job.rule))
        settings = getattr(self.workflow, "workflow_settings", None)
        cache = getattr(job.rule, "cache", None)
        return bool(settings is not None and settings.cache is not None and cache)

    def shorten_group_level_pause(self, pause: float | None) -> float | None:
        """Pause ``pause`` seconds (None: Snakemake's own) between the levels of
        a group job when Snakemake post-processes it (it touches each level's
        outputs after the one before). Returns the pause now in force, None
        where this Snakemake's pause is kept."""
        if not self.caps.group_level_pause:
            return None
        jobs_module = importlib.import_module("snakemake.jobs")
        with _install_lock:
            _group_asyncio.pause = pause
            jobs_module.asyncio = asyncio if pause is None else _group_asyncio
        return pause

    # -- resources -------------------------------------------------------------
    def limit_threads(self, node_cores: int, jobs: list[Any]) -> dict[str, int]:
        """Lower every job's threads to at most ``node_cores``, as Snakemake's
        ``--cores N`` lowers them to N (a job's threads run on one node).

        Snakemake constrains threads by the workflow's ``_cores`` resource
        (also for remote jobs); with ``-j unlimited`` that is unset. It is set
        here, after Snakemake's scheduler took its own copy of the limits (so
        it never limits how many jobs run at once), and the jobs of ``jobs``
        whose threads were above it are evaluated again. Returns ``{rule:
        threads asked}`` for the rules whose threads were lowered.
        """
        resources = self.workflow.global_resources
        current = resources.get("_cores")
        current = getattr(current, "value", current)
        if isinstance(current, int) and current <= node_cores:
            return {}
        asked, lowered = {}, []
        for job in jobs:
            try:
                with self.evaluated_early(job):
                    threads = job.threads
            except Exception:  # known when the job is ready (e.g. from its input)
                continue
            if isinstance(threads, int) and threads > node_cores:
                asked[job.rule.name] = threads
                lowered.append(job)
        resources["_cores"] = node_cores
        for job in lowered:
            # evaluated again within the new limit; only these: the others keep
            # what Snakemake left unevaluated (resources of inputs not made yet
            # are evaluated when the job is ready)
            job._resources = None
        return asked

    @contextlib.contextmanager
    def evaluated_early(self, job: Any) -> Iterator[None]:
        """Read ``job``'s resources before Snakemake would, leaving no trace:
        what is evaluated here is forgotten afterwards, so that Snakemake still
        evaluates them itself when the job is ready (resource functions may
        read files that earlier jobs make)."""
        saved = getattr(job, "_resources", None)
        try:
            yield
        finally:
            if hasattr(job, "_resources"):
                job._resources = saved

    def resources_as_local(self, job: Any) -> Any:
        """The job's resources as Snakemake's local executor evaluates them.

        Snakemake leaves ``tmpdir`` unevaluated (``<TBD>``) for remote executors,
        as the job's own Snakemake process evaluates it; on the direct path the
        plugin is that process.
        """
        if not self.caps.local_resources:
            raise NotDirect(f"Snakemake {self.version} cannot evaluate tmpdir here")
        return job.rule.expand_resources(
            job.wildcards_dict, job.input, job.attempt, skip_evaluation=set()
        )

    def group_resources(self, job: Any, node_cores: int) -> Mapping[str, Any]:
        """Resources of group ``job`` as Snakemake computes them for a group
        that may use at most ``node_cores`` cores (``--group-components``
        layering included); falls back to Snakemake's own figure."""
        if not self.caps.group_layering:
            return dict(job.resources)
        from snakemake.resources import GroupResources

        # Snakemake's own constraints (a dict or a ResourceList, by version),
        # with at most the cores of one node
        constraints = copy.deepcopy(job.global_resources)
        cores = constraints.get("_cores")
        cores = getattr(cores, "value", cores)
        if not isinstance(cores, int) or cores > node_cores:
            constraints["_cores"] = node_cores
        return dict(
            GroupResources.basic_layered(
                toposorted_jobs=job.toposorted,
                constraints=constraints,
                run_local=False,
                additive_resources=["runtime"],
                sortby=["runtime"],
            )
        )

    # -- the direct path ---------------------------------------------------------
    def capture_group(self, group: Any) -> list[tuple[Any, CapturedProcess]]:
        """Prepare and capture every member of ``group``, in Snakemake's order.

        Snakemake's ``job.prepare()`` waits for a job's input files; inside a
        group, a member's inputs are made by earlier members when the group
        runs, so that wait is skipped for the group's own products (all other
        inputs are waited for as usual). Raises :class:`NotDirect` as
        :meth:`capture_command` does.
        """
        if not self.caps.group_capture:
            raise NotDirect(f"Snakemake {self.version} cannot prepare group members here")
        jobs_module = importlib.import_module("snakemake.jobs")
        produced = {str(f) for job in group.jobs for f in job.output}
        original = jobs_module.wait_for_files

        async def wait_for_outside_files(files: Any, *args: Any, **kwargs: Any) -> Any:
            outside = [f for f in files if str(f) not in produced]
            return await original(outside, *args, **kwargs)

        jobs_module.wait_for_files = wait_for_outside_files
        try:
            return [(job, self.capture_command(job)) for level in group.toposorted for job in level]
        finally:
            jobs_module.wait_for_files = original

    def group_temp_files(self, group: Any) -> list[tuple[str, list[Any]]]:
        """The ``temp()`` files made inside ``group`` that no job outside it
        needs, each with the members that make or read it: Snakemake's local
        executor removes such a file as soon as the last of them is done
        (``DAG.handle_temp``), so the group's runner does that too. Raises
        :class:`NotDirect` where this Snakemake's DAG is unknown here and the
        group has temp files (Snakemake's per-job command removes them)."""
        from snakemake.io import is_flagged

        produced = [(job, f) for job in group.jobs for f in job.output if is_flagged(f, "temp")]
        if not produced:
            return []
        if not self.caps.group_temp:
            raise NotDirect(f"Snakemake {self.version}'s temp file handling is unknown here")
        try:
            return self._removable_temp_files(group, produced)
        except AttributeError as error:  # the DAG's own fields (instance attributes)
            raise NotDirect(
                f"Snakemake {self.version}'s temp file handling is unknown here ({error})"
            ) from None

    def _removable_temp_files(
        self, group: Any, produced: list[tuple[Any, Any]]
    ) -> list[tuple[str, list[Any]]]:
        if self.workflow.storage_settings.notemp:
            return []
        dag, members = self.workflow.dag, set(group.jobs)
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
                or (
                    producer in dag.targetjobs
                    and producer.rule.name != self.workflow.default_target
                )
            ):
                continue
            removable.append((str(f), [producer, *readers]))
        return removable

    def run_order(self, group: Any) -> list[RunSet]:
        """The members of ``group`` as Snakemake runs them, in sets: a set is
        one member, or one of Snakemake's pipe groups (members joined by
        ``pipe()`` or ``service()`` files), whose members Snakemake starts all
        at once. Sets are in dependency order (ties in Snakemake's topological
        order), each with the sets whose outputs it reads."""
        order = [job for level in group.toposorted for job in level]
        if not self.caps.pipe_groups:
            if any(job.is_pipe or job.is_service for job in order):
                raise NotDirect(f"Snakemake {self.version}'s pipe groups are unknown here")
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
            RunSet(sets[key], tuple(sorted(index[other] for other in needs[key])))
            for key in ordered
        ]

    def capture_command(self, job: Any) -> CapturedProcess:
        """Prepare ``job`` and build its process exactly as Snakemake's local
        executor would, without starting it.

        Raises :class:`NotDirect` when the job cannot run this way (nothing
        was started then); exceptions from the rule itself (a bad format
        string, a failing params function) are Snakemake's and propagate.
        """
        if not self.caps.direct:
            raise NotDirect(f"Snakemake {self.version} lacks what the direct path needs")
        from snakemake.executors.local import Executor as LocalExecutor
        from snakemake.executors.local import run_wrapper

        resources = self.resources_as_local(job)
        unknown = sorted(name for name, value in resources.items() if is_unknown_yet(value))
        if unknown:  # e.g. computed from inputs an earlier member of its group makes
            raise NotDirect(f"its resources {', '.join(unknown)} are not known before it runs")
        context = _LocalExecutorContext(self.workflow)
        args = LocalExecutor.job_args_and_prepare(context, job)
        bound = inspect.signature(run_wrapper).bind(*args)
        arguments = bound.arguments
        if (
            arguments.get("benchmark")
            or arguments.get("shadow_dir")
            or arguments.get("edit_notebook")
        ):
            raise NotDirect("it has a benchmark, a shadow directory or an edited notebook")
        cleanup_scripts = bool(arguments["cleanup_scripts"])
        arguments["cleanup_scripts"] = False  # the plugin removes them after the job
        arguments["resources"] = resources
        capture = _install_capture()
        with capture.capturing() as captured:
            run_wrapper(**arguments)
        if len(captured) != 1 or captured[0] is None:
            for process in captured:
                for path in process.cleanup if process is not None else ():
                    with contextlib.suppress(OSError):
                        os.remove(path)
            raise NotDirect(f"it started {len(captured)} processes instead of one shell command")
        process = captured[0]
        if cleanup_scripts:
            process.cleanup.extend(_written_scripts(process.command))
        return process


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


class _LocalExecutorContext:
    """What ``LocalExecutor.job_args_and_prepare`` reads of its executor."""

    def __init__(self, workflow: Any):
        self.workflow = workflow
        self.dag = workflow.dag
