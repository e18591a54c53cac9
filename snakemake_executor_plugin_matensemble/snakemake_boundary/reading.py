"""A Snakemake job read once: the boundary's making of a :class:`~.record.JobRecord`.

A part of :class:`~.SnakemakeBoundary` (which gives ``caps``, ``version``,
``group_resources``, ``uses_output_cache`` and ``evaluated_early``): every
value is read when Snakemake hands the job over, as the plugin read it
before, never earlier; what Snakemake evaluates later (a group member's
resources and threads) is read on demand.
"""

from __future__ import annotations

from collections.abc import Container, Iterator
from typing import Any

from . import facts
from .record import DirectFacts, JobRecord, group_name


class JobReader:
    """Reads Snakemake jobs into records (Snakemake's scheduler thread)."""

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
