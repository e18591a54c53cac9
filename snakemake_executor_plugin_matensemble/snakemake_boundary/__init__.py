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
  read here once per job (:meth:`SnakemakeBoundary.record`).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Container, Iterator, Mapping
from contextlib import contextmanager
from importlib import metadata
from typing import Any

from . import facts, patches
from .capture import CapturedProcess
from .patches import install_capture as _install_capture
from .preparation import NotDirect, RunSet, is_unknown_yet
from .preparation import capture_command as _capture_command
from .probing import Capabilities, probe
from .record import DirectFacts, JobRecord, group_name

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

    def incomplete_external_jobid(self, job: Any) -> str | None:
        """The backend id an earlier, killed run recorded for ``job`` (if any)."""
        return self.workflow.dag.incomplete_external_jobid(job)

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

    # -- the record: a job read once ---------------------------------------------
    def identity(self, job: Any) -> JobRecord:
        """``job``'s names only: its id, rule (a group's name), attempt and
        wildcards (a job refused before its record was read, or one Snakemake
        failed after it succeeded)."""
        if job.is_group():
            groupid = str(job.groupid)
            rules = tuple(sorted({member.rule.name for member in job.jobs}))
            return JobRecord(
                job, str(job.jobid), group_name(groupid, rules), job.attempt, {}, groupid, rules
            )
        rule = job.rule.name
        return JobRecord(job, str(job.jobid), rule, job.attempt, self.wildcards(job), None, (rule,))

    def record(self, job: Any, node_cores: int, direct: bool) -> JobRecord:
        """``job``, ready to run, read once: names, threads and resources (a
        group's as Snakemake layers them for ``node_cores``), priority,
        retries, outputs; with ``direct``, what decides whether it can run
        directly (for a group: of each member, in Snakemake's order)."""
        if job.is_group():
            groupid = str(job.groupid)
            members = tuple(
                self._member(member, direct) for level in job.toposorted for member in level
            )
            rules = tuple(sorted({member.rule for member in members}))
            resources = self.group_resources(job, node_cores)
            return JobRecord(
                job,
                str(job.jobid),
                group_name(groupid, rules),
                job.attempt,
                {},
                groupid,
                rules,
                threads=resources.get("_cores", 1),
                resources=resources,
                priority=self.priority(job),
                local=bool(job.is_local),
                restart_times=self._restart_times(job),
                outputs=tuple(str(f) for f in job.output),
                members=members,
            )
        rule = job.rule.name
        resources = job.resources  # evaluated here, when Snakemake handed the job over
        return JobRecord(
            job,
            str(job.jobid),
            rule,
            job.attempt,
            self.wildcards(job),
            None,
            (rule,),
            threads=job.threads,
            resources=resources,
            priority=self.priority(job),
            local=bool(job.is_local),
            restart_times=self._restart_times(job),
            outputs=tuple(str(f) for f in job.output),
            direct=self._direct_facts(job) if direct else None,
        )

    def request_record(self, job: Any, node_cores: int) -> JobRecord:
        """What the up-front check needs of ``job``: names, threads, resources
        (read inside :meth:`evaluated_early`, which the caller opens)."""
        identity = self.identity(job)
        if job.is_group():
            resources = self.group_resources(job, node_cores)
            threads = resources.get("_cores", 1)
        else:
            resources = job.resources
            threads = job.threads
        return JobRecord(
            job,
            identity.jobid,
            identity.rule,
            identity.attempt,
            identity.wildcards,
            identity.groupid,
            identity.rules,
            threads=threads,
            resources=resources,
            local=bool(job.is_local),
        )

    def records_read_early(
        self, jobs: list[Any], node_cores: int, skip_rules: Container[str]
    ) -> Iterator[tuple[str, JobRecord | Exception]]:
        """The up-front check's reading of ``jobs``: for each job that is not a
        ``localrule`` and whose rule is not in ``skip_rules`` (looked at as it
        goes), its rule and its :meth:`request_record`, or the exception that
        reading raised. Read before Snakemake would (:meth:`evaluated_early`):
        what was evaluated is forgotten when the caller asks for the next job."""
        for job in jobs:
            rule = job.rule.name
            if job.is_local or rule in skip_rules:
                continue
            with self.evaluated_early(job):
                try:
                    record: JobRecord | Exception = self.request_record(job, node_cores)
                except Exception as error:  # values that need inputs not made yet
                    record = error
                yield rule, record

    def _member(self, job: Any, direct: bool) -> JobRecord:
        """A group's member: names, files, what decides its path (its threads
        and resources are Snakemake's to evaluate when the group runs:
        :meth:`member_resources`, :meth:`member_threads`)."""
        rule = job.rule.name
        return JobRecord(
            job,
            str(job.jobid),
            rule,
            job.attempt,
            rules=(rule,),
            inputs=tuple(str(f) for f in job.input),
            outputs=tuple(str(f) for f in job.output),
            direct=self._direct_facts(job, in_group=True) if direct else None,
        )

    def member_resources(self, member: JobRecord) -> Any:
        """A group member's resources, evaluated now (Snakemake's own mapping)."""
        return member.job.resources

    def member_threads(self, member: JobRecord) -> Any:
        """A group member's threads, evaluated now."""
        return member.job.threads

    def _restart_times(self, job: Any) -> int:
        return facts.restart_times(job) if self.caps.job_facts else 0

    def _direct_facts(self, job: Any, in_group: bool = False) -> DirectFacts:
        """What decides whether a single job can run directly (the rule's
        params, resources and command as written: of a group's members only)."""
        if not self.caps.job_facts:
            unknown = f"Snakemake {self.version}'s job attributes are unknown here"
            return DirectFacts(unknown, "unknown", False, False, False, False)
        kind = facts.rule_kind(job)
        written: tuple[Any, ...] = ()
        if in_group:
            written = (
                tuple(facts.rule_params(job)),
                facts.rule_resources(job),
                facts.shell_command(job) or "",
            )
        return DirectFacts(
            self._per_job_because(job, kind),
            kind,
            facts.is_pipe(job),
            facts.is_service(job),
            bool(job.benchmark),
            self.uses_output_cache(job),
            *written,
        )

    def _per_job_because(self, job: Any, kind: str) -> str | None:
        """Why a single job of rule ``kind`` must run per job, from what it is:
        a ``run:``-like directive, a shadow directory, a handover rule, remote
        storage, no command at all; None: nothing of that."""
        what = facts.per_job_kind(job)
        if what is not None:
            return f"it has {what}"
        if kind == "other":
            return "it has no shell:, script:, notebook: or wrapper: directive"
        if facts.is_shadow(job):
            return "it uses shadow:"
        if facts.is_handover(job):
            return "it is a handover rule"
        if facts.uses_storage(job):
            return "it reads or writes remote storage"
        return None

    def priority(self, job: Any) -> int:
        """A job's Snakemake ``priority`` (0 where unknown or not a number)."""
        if not self.caps.job_priority:
            return 0
        try:
            priority = job.priority
        except Exception:  # a group, or evaluated from something not there
            return 0
        return priority if isinstance(priority, int) else 0

    def wildcards(self, job: Any) -> dict[str, str]:
        """A single job's wildcards ({} where unknown: names without them)."""
        if job.is_group() or not self.caps.job_facts:
            return {}
        return facts.wildcards(job)

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
