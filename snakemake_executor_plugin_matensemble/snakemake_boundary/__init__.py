"""The one place that reaches into Snakemake beyond snakemake-interface-executor-plugins.

Everything else in the plugin talks to Snakemake through the executor-plugin
interface or through this package:

* :mod:`.probing`: the start-up check of every internal used here; where one is
  missing or changed, the feature that needs it is switched off and the jobs
  concerned run through Snakemake's own per-job command (slower, never wrong),
  with one warning that names the Snakemake version;
* :mod:`.facts`: what decides a job's path (rule kind, shadow, pipes, storage...);
* :mod:`.preparation`: Snakemake's own preparation of a job, its process
  captured unstarted (:mod:`.capture`);
* :mod:`.patches`: every change made to Snakemake's modules and objects, each
  undone by :meth:`SnakemakeBoundary.close`;
* :mod:`.record`: a job as the rest of the plugin sees it (:class:`JobRecord`),
  read once per job by :mod:`.reading` (:meth:`SnakemakeBoundary.record`).
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib import metadata
from typing import Any

from . import patches
from .capture import CapturedProcess
from .patches import install_capture as _install_capture
from .preparation import NotDirect, RunSet, is_unknown_yet
from .preparation import capture_command as _capture_command
from .probing import Capabilities, probe
from .reading import JobReader
from .record import DirectFacts, JobRecord

__all__ = [
    "Capabilities",
    "CapturedProcess",
    "DirectFacts",
    "JobRecord",
    "NotDirect",
    "RunSet",
    "SnakemakeBoundary",
    "_install_capture",
    "is_unknown_yet",
    "probe",
    "snakemake_version",
]

log = logging.getLogger("snakemake.logging.matensemble.boundary")


def snakemake_version() -> str:
    try:
        return metadata.version("snakemake")
    except metadata.PackageNotFoundError:  # pragma: no cover - snakemake runs us
        return "unknown"


class SnakemakeBoundary(JobReader):
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

    def close(self) -> None:
        """Undo every change made to Snakemake (:mod:`.patches`)."""
        patches.undo_all()

    # -- settings and scheduler ------------------------------------------------
    def keep_going(self) -> bool:
        return bool(self.workflow.execution_settings.keep_going)

    def needrun_jobs(self) -> list[Any] | None:
        """Every job of the DAG that will run (None: not available)."""
        if not self.caps.upfront_check:
            return None
        return list(self.workflow.dag.needrun_jobs())

    @staticmethod
    def executor_job_count(jobs: list[Any] | None) -> int | None:
        """How many of ``jobs`` the executor runs (not local rules such as a
        target ``all``); None where the jobs are unknown."""
        if jobs is None:
            return None
        return sum(1 for job in jobs if not getattr(job, "is_local", False))

    def latency_wait(self) -> float:
        """``--latency-wait``: how long Snakemake waits for a job's missing input."""
        return float(self.workflow.execution_settings.latency_wait)

    def job_not_started(self, record: JobRecord) -> None:
        """Tell Snakemake's scheduler that the job was handed over but will not run."""
        self.workflow.scheduler.error_callback(record.job)

    def register_external_jobid(self, record: JobRecord, backend_id: str) -> None:
        """Record the backend's id in the job's incomplete marker (a killed and
        restarted run re-attaches to it instead of running the job twice)."""
        record.job.register(external_jobid=backend_id)

    def incomplete_external_jobid(self, record: JobRecord) -> str | None:
        """The backend id an earlier, killed run recorded for the job (if any)."""
        return self.workflow.dag.incomplete_external_jobid(record.job)

    def recorded_external_jobids(self) -> set[str]:
        """The backend ids an earlier, killed run recorded in the incomplete
        markers of jobs this run needs (Snakemake gives none under
        --rerun-incomplete)."""
        ids = set()
        for job in self.needrun_jobs() or ():
            with contextlib.suppress(Exception):  # several ids: Snakemake refuses it later
                external = self.workflow.dag.incomplete_external_jobid(job)
                if external:
                    ids.add(external)
        return ids

    def executor_failed(self, error: BaseException) -> None:
        self.workflow.scheduler.executor_error_callback(error)

    def uses_output_cache(self, job: Any) -> bool:
        """True when the rule's output goes through the between-workflow cache
        (also where this Snakemake's cache is unknown here: such a job must run
        per job)."""
        if not self.caps.output_cache:
            return True
        get_cache_mode = getattr(self.workflow, "get_cache_mode", None)
        if get_cache_mode is not None:  # Snakemake < 9.16
            return bool(get_cache_mode(job.rule))
        return bool(self.workflow.workflow_settings.cache is not None and job.rule.cache)

    def shorten_group_level_pause(self, pause: float | None) -> float | None:
        """Pause ``pause`` seconds (None: Snakemake's own) between the levels of
        a group job when Snakemake post-processes it (it touches each level's
        outputs after the one before). Returns the pause now in force, None
        where this Snakemake's pause is kept."""
        if not self.caps.group_level_pause:
            return None
        patches.set_level_pause(pause)
        return pause

    # -- resources -------------------------------------------------------------
    def limit_threads(self, node_cores: int, jobs: list[Any]) -> dict[str, int]:
        """Lower every job's threads to at most ``node_cores``, as Snakemake's
        ``--cores N`` lowers them to N (a job's threads run on one node).

        Snakemake constrains threads by the workflow's ``_cores`` resource
        (also for remote jobs); with ``-j unlimited`` that is unset. It is set
        here (:func:`.patches.limit_cores`, undone at :meth:`close`), after
        Snakemake's scheduler took its own copy of the limits (so it never
        limits how many jobs run at once), and the jobs of ``jobs`` whose
        threads were above it are evaluated again. Returns ``{rule: threads
        asked}`` for the rules whose threads were lowered.
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
        patches.limit_cores(resources, node_cores)
        # evaluated again within the new limit; only these: the others keep
        # what Snakemake left unevaluated (resources of inputs not made yet
        # are evaluated when the job is ready)
        patches.forget_resources(lowered)
        return asked

    @contextmanager
    def evaluated_early(self, job: Any) -> Iterator[None]:
        """Read ``job``'s resources before Snakemake would, leaving no trace:
        what is evaluated here is forgotten afterwards, so that Snakemake still
        evaluates them itself when the job is ready (resource functions may
        read files that earlier jobs make)."""
        with patches.resources_forgotten_after(job):
            yield

    def resources_as_local(self, job: Any) -> Any:
        """The job's resources as Snakemake's local executor evaluates them.

        Snakemake leaves ``tmpdir`` unevaluated (``<TBD>``) for remote executors,
        as the job's own Snakemake process evaluates it; on the direct path the
        plugin is that process.
        """
        if not self.caps.local_resources or not self.caps.job_facts:
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
    def capture_command(self, record: JobRecord) -> CapturedProcess:
        """Prepare the job and build its process exactly as Snakemake's local
        executor would, without starting it (:func:`.preparation.capture_command`).

        Raises :class:`NotDirect` when the job cannot run this way.
        """
        if not self.caps.direct:
            raise NotDirect(f"Snakemake {self.version} lacks what the direct path needs")
        job = record.job
        return _capture_command(self.workflow, job, self.resources_as_local(job))

    def capture_group(self, group: JobRecord) -> list[tuple[JobRecord, CapturedProcess]]:
        """Prepare and capture every member of ``group``, in Snakemake's order.

        Snakemake's ``job.prepare()`` waits for a job's input files; inside a
        group, a member's inputs are made by earlier members when the group
        runs, so that wait is skipped for the group's own products (all other
        inputs are waited for as usual). Raises :class:`NotDirect` as
        :meth:`capture_command` does.
        """
        if not self.caps.group_capture:
            raise NotDirect(f"Snakemake {self.version} cannot prepare group members here")
        produced = {path for member in group.members for path in member.outputs}
        with patches.waiting_only_for_outside(produced):
            return [(member, self.capture_command(member)) for member in group.members]

    def run_order(self, group: JobRecord) -> list[RunSet]:
        """The members of ``group`` as Snakemake runs them, in sets of member
        records (:func:`.preparation.run_order`)."""
        from .preparation import run_order

        if not self.caps.job_facts:
            raise NotDirect(f"Snakemake {self.version}'s job attributes are unknown here")
        member = _members_by_job(group)
        return [
            RunSet([member[id(job)] for job in run_set.jobs], run_set.after)
            for run_set in run_order(group.job, self.caps.pipe_groups, self.version)
        ]

    def group_temp_files(self, group: JobRecord) -> list[tuple[str, list[JobRecord]]]:
        """The ``temp()`` files made inside ``group`` that no job outside it
        needs, each with the members that make or read it: Snakemake's local
        executor removes such a file as soon as the last of them is done
        (``DAG.handle_temp``), so the group's runner does that too. Raises
        :class:`NotDirect` where this Snakemake's DAG is unknown here and the
        group has temp files (Snakemake's per-job command removes them)."""
        from .preparation import removable_temp_files, temp_files_made

        produced = temp_files_made(group.job)
        if not produced:
            return []
        if not self.caps.group_temp:
            raise NotDirect(f"Snakemake {self.version}'s temp file handling is unknown here")
        try:
            removable = removable_temp_files(self.workflow, group.job, produced)
        except AttributeError as error:  # the DAG's own fields (instance attributes)
            raise NotDirect(
                f"Snakemake {self.version}'s temp file handling is unknown here ({error})"
            ) from None
        member = _members_by_job(group)
        return [(path, [member[id(job)] for job in jobs]) for path, jobs in removable]


def _members_by_job(group: JobRecord) -> dict[int, JobRecord]:
    """A group's member records by their Snakemake job (its ``id``)."""
    return {id(member.job): member for member in group.members}
