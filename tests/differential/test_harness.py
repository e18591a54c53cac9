"""The differential harness itself: what it counts as a difference.

Each check here is one way the suite could pass when the plugin differs from
Snakemake's local executor (a hang, processes left behind, a group's failure
lines, an allocation larger than the local side's cores).
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from .harness import (
    Case,
    Result,
    Side,
    error_rules,
    executor_args,
    exit_diffs,
    kill_leftovers,
    leftover_diffs,
    run_step_expect,
)

pytestmark = pytest.mark.snakemake_independent


def result(code: int, timed_out: bool = False) -> Result:
    return Result(["snakemake"], code, "", timed_out)


@pytest.mark.parametrize("cores", [1, 2, 3])
def test_the_plugin_always_gets_the_cases_cores(tmp_path, cores):
    case = Case("cases/x", tmp_path, cores=cores)
    side = Side("matensemble", tmp_path, tmp_path)
    args = executor_args(case, side)
    assert args[args.index("--matensemble-local-cores") + 1] == str(cores)
    assert executor_args(case, Side("local", tmp_path, tmp_path)) == ["--cores", str(cores)]


@pytest.mark.parametrize("expect", ["failure", "any"])
def test_a_side_killed_at_the_time_limit_is_a_difference(expect):
    # local failed as expected; the plugin printed the error and then hung
    results = {"local": result(1), "matensemble": result(-9, timed_out=True)}
    (diff,) = exit_diffs("first run", results, expect)
    assert "killed at the time limit with matensemble" in diff


def test_ordinary_failures_on_both_sides_agree_when_failure_is_expected():
    assert exit_diffs("first run", {"local": result(1), "matensemble": result(1)}, "failure") == []


def test_a_group_failures_indented_rule_lines_count():
    group_error = (
        "Error in group g:\n    message: Error in group g\n    jobs:\n        rule b:\n"
        "    Error in rule a:\n        jobid: 2\n    Error in rule b:\n        jobid: 1\n"
    )
    assert error_rules(group_error) == ["a", "b"]
    assert error_rules("Error in rule b:\n    jobid: 1\n") == ["b"]


def test_processes_left_running_are_found_and_killed(tmp_path):
    workdir = tmp_path / "work"
    workdir.mkdir()
    marker = f"left-behind-{tmp_path.name}"
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", marker], cwd=workdir
    )
    try:
        time.sleep(0.2)
        (left,) = kill_leftovers(tmp_path)
        assert marker in left
        assert process.wait(timeout=10) != 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert kill_leftovers(tmp_path) == []


def test_processes_left_by_the_plugin_only_are_a_difference():
    (diff,) = leftover_diffs("first run", {"local": [], "matensemble": ["sleep 120"]})
    assert "left running with matensemble only: sleep 120" in diff
    same = {"local": ["cat <WORKDIR>/p"], "matensemble": ["cat <WORKDIR>/p"]}
    assert leftover_diffs("first run", same) == []
    # Snakemake's own leftovers (a blocked pipe consumer) the plugin need not copy
    assert leftover_diffs("first run", {"local": ["grep 1"], "matensemble": []}) == []


def test_a_run_step_must_succeed_when_the_case_expects_success(tmp_path):
    expect = run_step_expect(Case("cases/x", tmp_path))
    assert exit_diffs("step 2", {"local": result(1), "matensemble": result(1)}, expect)
    failing = run_step_expect(Case("cases/x", tmp_path, expect="failure"))
    assert exit_diffs("step 2", {"local": result(1), "matensemble": result(1)}, failing) == []
