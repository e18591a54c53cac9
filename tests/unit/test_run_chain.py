"""A run over several allocations: previous-run links, the chain's report, and
the allocation's changes (resource events) in the journal."""

from snakemake_executor_plugin_matensemble.observing.journal import Journal, find_previous_journal
from snakemake_executor_plugin_matensemble.observing.summary_text import (
    chain_lines,
    resource_lines,
    run_chain,
)
from snakemake_executor_plugin_matensemble.packing.allocation import Allocation
from snakemake_executor_plugin_matensemble.packing.nodes import NodeSpec
from snakemake_executor_plugin_matensemble.packing.resource_request import ResourceRequest

ALLOCATION = Allocation([NodeSpec(0, "n0", (0, 1)), NodeSpec(1, "n1", (0, 1))])


def journal(root, run_id, jobs_done, jobs_left, previous=None):
    j = Journal(root / run_id)
    j.run_started(run_id, "flux", "backfill", ALLOCATION)
    if previous is not None:
        j.previous_run(previous.parent.name, previous, done=2, left=1)
    key = 0
    for i in range(jobs_done):
        key += 1
        j.queued(key, {"rule": "md", "wildcards": {"i": str(i)}}, ResourceRequest(), "x.log")
        j.started(key, f"f{key}", None, 100.0 + i)
        j.ended(key, "finished", "success", end=110.0 + i)
    for i in range(jobs_left):
        key += 1
        j.queued(key, {"rule": "md", "wildcards": {"i": f"left{i}"}}, ResourceRequest(), "x.log")
        j.ended(key, "cancelled", "cancelled", reason="not started")
    j.close()
    return j.path


def test_a_run_over_two_allocations_reports_both(tmp_path):
    first = journal(tmp_path, "20261123T080000-1", jobs_done=2, jobs_left=1)
    assert find_previous_journal(tmp_path, tmp_path / "20261123T090000-2/journal.jsonl") == first
    second = journal(tmp_path, "20261123T090000-2", jobs_done=1, jobs_left=0, previous=first)
    assert run_chain(second) == [first, second]
    lines = chain_lines(second)
    assert lines[0] == "matensemble: this run went on over 2 allocations:"
    assert "1. run 20261123T080000-1: 2 done, 0 failed, 1 not started" in lines[1]
    assert "2. run 20261123T090000-2: 1 done" in lines[2]
    assert chain_lines(first) == []  # one allocation: nothing to add


def test_resource_events_are_listed(tmp_path):
    j = Journal(tmp_path / "run")
    j.resource_event("drain", [1], "bad dimm", at=1795420000.0)
    j.resource_event("undrain", [1], at=1795420060.0)
    j.resource_event("down", [2], at=1795420120.0)
    j.close()
    lines = resource_lines(j.path)
    assert [line.split(" ", 2)[2] for line in lines] == [
        "rank 1 drained (bad dimm).",
        "rank 1 undrained.",
        "rank 2 went down.",
    ]
