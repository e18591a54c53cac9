"""Log paths and names: readable, and distinct for distinct jobs."""

from types import SimpleNamespace

import pytest

from snakemake_executor_plugin_matensemble.intake import naming


def single_job(rule: str, attempt: int = 1, **wildcards: str) -> SimpleNamespace:
    return SimpleNamespace(
        is_group=lambda: False,
        rule=SimpleNamespace(name=rule),
        wildcards_dict=wildcards,
        attempt=attempt,
        jobid=7,
    )


def group_job(groupid: str, jobid: str, attempt: int = 1) -> SimpleNamespace:
    return SimpleNamespace(
        is_group=lambda: True, groupid=groupid, jobid=jobid, attempt=attempt, jobs=[]
    )


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
    named = group_job("chain", "j1")
    assert naming.group_name(named) == "group chain"
    pipe = group_job("2e102179-8793-479c-a1da-6818ca42a236", "j2")
    pipe.jobs = [single_job("produce"), single_job("count"), single_job("count")]
    assert naming.group_name(pipe) == "group of rules count, produce"
    assert naming.rule_of(pipe) == "group of rules count, produce"
