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
    job_blocks,
    kill_leftovers,
    leftover_diffs,
    list_diff,
    load_case,
    run_step_expect,
    without_known_differences,
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
    assert error_rules(group_error) == ["a x1", "b x1"]
    assert error_rules("Error in rule b:\n    jobid: 1\n") == ["b x1"]


def test_a_rule_reported_failing_three_times_against_once_is_a_difference():
    """--retries: every failed attempt prints its 'Error in rule' block."""
    thrice = "Error in rule flaky:\n    jobid: 1\n" * 3
    once = "Error in rule flaky:\n    jobid: 1\n"
    assert error_rules(thrice) == ["flaky x3"]
    (diff,) = list_diff("first run: rules reported failing", error_rules(thrice), error_rules(once))
    assert "-flaky x3" in diff
    assert "+flaky x1" in diff
    assert list_diff("same", error_rules(thrice), error_rules(thrice)) == []


def test_a_group_jobs_members_in_a_dry_run_are_compared():
    """Members are printed indented under 'Group job g': a member that only one
    side would rerun is a difference."""
    group = (
        "Group job g (jobs in lexicogr. order):\n\n    [Thu Dec  3 08:06:48 2026]\n"
        "    rule {name}:\n        output: {name}.txt\n        jobid: 2\n"
        "        reason: Missing output files: {name}.txt\n"
    )
    blocks = job_blocks(group.format(name="a") + group.format(name="b"))
    assert blocks == [
        "rule a:",
        "    output: a.txt",
        "    reason: Missing output files: a.txt",
        "rule b:",
        "    output: b.txt",
        "    reason: Missing output files: b.txt",
    ]
    assert list_diff("dry run", job_blocks(group.format(name="b")), blocks)


KNOWN = "first run: rules reported failing differ:\n    +a x1\n     b x1"


def _case_with_known(tmp_path, *known):
    why = "one job to Snakemake"
    return Case("cases/x", tmp_path, known_differences={"why": why, "differences": [*known]})


def test_exactly_the_known_differences_are_accepted_and_every_other_fails(tmp_path):
    case = _case_with_known(tmp_path, KNOWN + "\n")  # YAML may keep a final newline
    assert without_known_differences(case, [KNOWN]) == []
    hang = "first run: killed at the time limit with matensemble"
    left = "first run: left running with matensemble only: sleep 300"
    other = "after first run: c.txt: file present with matensemble only"
    assert without_known_differences(case, [KNOWN, hang, left, other]) == [hang, left, other]
    # the same difference with another count or another rule is not the known one
    changed = KNOWN.replace("+a x1", "+a x2")
    assert without_known_differences(case, [changed])[0] == changed


def test_a_known_difference_that_no_longer_occurs_fails(tmp_path):
    (diff,) = without_known_differences(_case_with_known(tmp_path, KNOWN), [])
    assert diff.startswith("known difference did not occur (fixed? remove it")
    assert KNOWN in diff


def test_a_known_difference_for_other_snakemake_releases_is_not_accepted(tmp_path):
    never, always = {"text": KNOWN, "snakemake": "<0.1"}, {"text": KNOWN, "snakemake": ">=0.1"}
    assert without_known_differences(_case_with_known(tmp_path, never), [KNOWN]) == [KNOWN]
    assert without_known_differences(_case_with_known(tmp_path, never), []) == []
    assert without_known_differences(_case_with_known(tmp_path, always), [KNOWN]) == []


@pytest.mark.parametrize(
    "known",
    [
        {"differences": ["x"]},  # no reason
        {"why": " ", "differences": ["x"]},
        {"why": "because", "differences": []},
        {"why": "because", "differences": "x"},
        {"why": "because", "differences": [{"text": "x"}]},  # no version range
    ],
)
def test_a_known_difference_needs_its_reason_and_its_exact_text(tmp_path, known):
    import yaml

    (tmp_path / "differential.yaml").write_text(yaml.safe_dump({"known_differences": known}))
    with pytest.raises(ValueError, match="known_differences needs 'why'"):
        load_case(tmp_path)


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
