"""Which path a job takes, decided from its record (no Snakemake job needed)."""

import pytest

from snakemake_executor_plugin_matensemble.intake.command import (
    OPT_OUT_RESOURCE,
    per_job_reason,
)
from snakemake_executor_plugin_matensemble.snakemake_boundary import DirectFacts, JobRecord


def facts(**changes) -> DirectFacts:
    values = dict(
        per_job_because=None,
        kind="shell",
        pipe=False,
        service=False,
        benchmark=False,
        output_cache=False,
    )
    return DirectFacts(**{**values, **changes})


def single(resources=None, **fact_changes) -> JobRecord:
    return JobRecord(
        None,
        "1",
        "md",
        1,
        {},
        rules=("md",),
        resources=resources or {},
        direct=facts(**fact_changes),
    )


class Boundary:
    """The boundary's lazy part: a member's resources, evaluated on demand."""

    def __init__(self, resources):
        self.resources = resources
        self.evaluated: list[str] = []

    def member_resources(self, member):
        self.evaluated.append(member.rule)
        return self.resources[member.rule]


def group(*members: JobRecord) -> JobRecord:
    rules = tuple(sorted({m.rule for m in members}))
    return JobRecord(None, "g1", "group g", 1, {}, "g", rules, resources={}, members=members)


def member(rule: str, **fact_changes) -> JobRecord:
    return JobRecord(None, rule, rule, 1, rules=(rule,), direct=facts(**fact_changes))


@pytest.mark.snakemake_independent
def test_a_plain_shell_job_runs_directly_and_the_reasons_come_from_its_record():
    assert per_job_reason(single(), None, direct_enabled=True) is None
    assert "turned off" in per_job_reason(single(), None, direct_enabled=False)
    assert per_job_reason(single(per_job_because="it uses shadow:"), None, True) == (
        "it uses shadow:"
    )
    opted_out = single(resources={OPT_OUT_RESOURCE: 0})
    assert "opts out" in per_job_reason(opted_out, None, True)
    assert "benchmark" in per_job_reason(single(benchmark=True), None, True)
    assert "output cache" in per_job_reason(single(output_cache=True), None, True)
    assert "pipe or service" in per_job_reason(single(pipe=True), None, True)


@pytest.mark.snakemake_independent
def test_a_members_resources_are_evaluated_only_when_its_kind_allows_the_direct_path():
    # Snakemake evaluates a member's resources late (they may read an earlier
    # member's output): a member that runs per job anyway is never evaluated
    boundary = Boundary({"a": {}, "b": {}})
    reason = per_job_reason(
        group(member("a", per_job_because="it has a run: block"), member("b")), boundary, True
    )
    assert reason == "its member a has a run: block"
    assert boundary.evaluated == []
    assert per_job_reason(group(member("a"), member("b")), boundary, True) is None
    assert boundary.evaluated == ["a", "b"]


@pytest.mark.snakemake_independent
def test_a_member_with_params_from_its_input_takes_the_group_through_snakemake():
    def from_input(wildcards, input):
        return input

    boundary = Boundary({"a": {}, "b": {}})
    reading = member("b", written_params=(from_input,))
    reason = per_job_reason(group(member("a"), reading), boundary, True)
    assert reason == "its member b has params, threads or resources computed from its input"
    pipe_member = member("b", pipe=True)  # pipes inside a group run together: fine
    assert per_job_reason(group(member("a"), pipe_member), boundary, True) is None
