"""Log paths and names: readable, and distinct for distinct jobs."""

import pytest

from snakemake_executor_plugin_matensemble.intake import naming
from snakemake_executor_plugin_matensemble.snakemake_boundary import JobRecord
from snakemake_executor_plugin_matensemble.snakemake_boundary.record import group_name


def single_job(rule: str, attempt: int = 1, **wildcards: str) -> JobRecord:
    return JobRecord(None, "7", rule, attempt, wildcards, rules=(rule,))


def group_job(groupid: str, jobid: str, attempt: int = 1, rules=("a",)) -> JobRecord:
    return JobRecord(None, jobid, group_name(groupid, rules), attempt, {}, groupid, rules)


@pytest.mark.parametrize(
    "values",
    [("a b", "a_b"), ("a/b", "a_b"), ("é", "e"), ("x" * 130, "x" * 131), ("..", "_")],
)
def test_distinct_wildcards_get_distinct_logs(values):
    paths = {naming.log_path("logs", single_job("r", s=value)) for value in values}
    assert len(paths) == len(values)


def test_log_paths_stay_inside_the_log_dir_and_are_readable():
    path = naming.log_path("logs", single_job("md", T="300", seed="1"))
    assert str(path) == "logs/rule_md/T=300_seed=1/attempt1.log"
    for value in ("..", ".", "../../etc"):
        parts = naming.log_path("logs", single_job("r", s=value)).parts
        assert ".." not in parts
        assert "." not in parts
    assert "é" in str(naming.log_path("logs", single_job("r", s="é")))


def test_each_attempt_has_its_own_log():
    first = naming.log_path("logs", single_job("r", attempt=1, s="1"))
    second = naming.log_path("logs", single_job("r", attempt=2, s="1"))
    assert first != second
    assert first.parent == second.parent


def test_each_group_job_has_its_own_log():
    one = naming.log_path("logs", group_job("g", "1b2c"))
    other = naming.log_path("logs", group_job("g", "9f8e"))
    assert one != other
    assert one.parts[:2] == ("logs", "group_g")


def test_groups_snakemake_makes_are_named_by_their_rules():
    assert group_name("chain", ("a", "b")) == "group chain"
    pipe = group_job("2e102179-8793-479c-a1da-6818ca42a236", "j2", rules=("count", "produce"))
    assert pipe.rule == "group of rules count, produce"
    assert naming.display_name(pipe) == "group-2e102179-8793-479c-a1da-6818ca42a236"
    assert naming.where(pipe) == (
        "group job '2e102179-8793-479c-a1da-6818ca42a236' (rules count, produce)"
    )


def test_a_single_job_is_named_by_its_rule_and_wildcards():
    job = single_job("md", T="300", seed="1")
    assert naming.display_name(job) == "md[T=300,seed=1]"
    assert naming.where(job) == "rule 'md' (jobid 7, wildcards T=300, seed=1)"
    assert naming.journal_record(job) == {
        "rule": "md",
        "wildcards": {"T": "300", "seed": "1"},
        "jobid": "7",
        "attempt": 1,
    }
