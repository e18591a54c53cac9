"""The report of a run over several allocations: one time axis, the gaps,
totals (each job once) and one line per allocation."""

from __future__ import annotations

import json

from snakemake_executor_plugin_matensemble.campaign.report import (
    allocation_spans,
    chain_summary_lines,
    draw_chain,
    gaps_s,
)
from snakemake_executor_plugin_matensemble.observing.journal import Journal
from snakemake_executor_plugin_matensemble.observing.report import main
from snakemake_executor_plugin_matensemble.packing.allocation import Allocation, NodeSpec
from snakemake_executor_plugin_matensemble.packing.resource_request import ResourceRequest

ALLOCATION = Allocation([NodeSpec(0, "n0", (0, 1))])


def journal(root, run_id, begin, done, left, previous=None):
    """A journal whose run began at ``begin`` (epoch seconds): ``done`` jobs of
    10 s each, one after another, ``left`` not started."""
    j = Journal(root / run_id)
    j.run_started(run_id, "flux", "backfill", ALLOCATION)
    if previous is not None:
        j.previous_run(previous.parent.name, previous, done=1, left=len(left))
    key = 0
    for i, name in enumerate(done):
        key += 1
        j.queued(key, {"rule": "md", "wildcards": {"i": name}}, ResourceRequest(), "x.log")
        j.started(key, f"f{key}", None, begin + 10 * i)
        j.ended(key, "finished", "success", end=begin + 10 * (i + 1))
    for name in left:
        key += 1
        j.queued(key, {"rule": "md", "wildcards": {"i": name}}, ResourceRequest(), "x.log")
        j.ended(key, "cancelled", "cancelled", reason="not started")
    j.close()
    # the journal's own times (``t``) as if written then: the run began at ``begin``
    events = [json.loads(line) for line in j.path.read_text().splitlines()]
    for event in events:
        event["t"] = begin if event["event"] in ("run", "previous") else begin + 10 * len(done)
    j.path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return j.path


def test_every_allocation_on_one_axis_with_the_gaps(tmp_path):
    first = journal(tmp_path, "20261123T080000-1", 1000.0, ["0", "1"], ["2", "3"])
    second = journal(tmp_path, "20261123T090000-2", 1100.0, ["2"], ["3"], previous=first)
    third = journal(tmp_path, "20261123T100000-3", 1200.0, ["3"], [], previous=second)
    spans = allocation_spans(third)
    assert [s.number for s in spans] == [1, 2, 3]
    assert gaps_s(spans) == [80.0, 90.0]
    lines = chain_summary_lines(spans)
    assert lines[0] == (
        "matensemble: 3 allocations: 4 job(s) done, 0 failed over 3.5 min "
        "(0.7 min in allocations, 2.8 min between them)."
    )
    assert "allocation 1 (20261123T080000-1): 20 s, 2 done, 0 failed, 2 not started" in lines[1]
    assert lines[1].endswith("; 80 s until the next")
    assert "allocation 3" in lines[3]
    assert "until the next" not in lines[3]
    assert draw_chain(third, tmp_path / "a.png") == lines
    assert (tmp_path / "a.png").stat().st_size > 1000


def test_matensemble_report_draws_the_allocations_of_a_chain_only(tmp_path, capsys):
    first = journal(tmp_path, "20261123T080000-1", 1000.0, ["0"], ["1"])
    assert main([str(first), "-o", str(tmp_path / "one")]) == 0
    assert not (tmp_path / "one" / "allocations.png").exists()
    journal(tmp_path, "20261123T090000-2", 1100.0, ["1"], [], previous=first)
    assert main([str(tmp_path), "-o", str(tmp_path / "two")]) == 0
    assert (tmp_path / "two" / "allocations.png").exists()
    assert "matensemble: 2 allocations: 2 job(s) done" in capsys.readouterr().out
