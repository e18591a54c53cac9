"""``--scheduler matensemble`` inside a real snakemake run where the selection
matters: ``-j 2`` and ``--resources io=100`` bind (a custom resource has global
scope; ``mem_mb`` would not bind here: for an executor plugin it is a per-job
resource), with ties, priorities, input sizes, a group job and a pipe group. On
every selection Snakemake asks for, the plugin's choice is compared with
Snakemake's own ``greedy`` on the same ready jobs and the same limits (recorded
by a wrapper around the plugin in the snakemake process), and the jobs' own
start and end stamps show that the limits held while they ran."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ..helpers import write_snakefile

pytest.importorskip(  # scheduler plugins came with Snakemake 9.10
    "snakemake.scheduling.greedy",
    reason="this Snakemake has no scheduler plugins (--scheduler takes no plugin)",
)

#: snakemake, with the matensemble scheduler's select_jobs wrapped: each call also
#: asks Snakemake's greedy selector and appends both choices to $SELECTIONS
RECORDING_SNAKEMAKE = textwrap.dedent(
    """
    import json, logging, os, sys
    import snakemake_scheduler_plugin_matensemble as plugin
    from snakemake.scheduling import greedy

    def name(job):
        if hasattr(job, "groupid"):
            return "group:" + ",".join(sorted(name(member) for member in job.jobs))
        return job.rule.name + ":" + ",".join(f"{k}={v}" for k, v in job.wildcards_dict.items())

    select = plugin.Scheduler.select_jobs

    def recording(self, selectable, remaining, available, input_sizes):
        limits = dict(available)
        ours = select(self, selectable, remaining, available, input_sizes)
        snakemakes = greedy.Scheduler(None, greedy.SchedulerSettings(), logging.getLogger())
        theirs = snakemakes.select_jobs(selectable, remaining, dict(limits), input_sizes)
        with open(os.environ["SELECTIONS"], "a") as out:
            out.write(json.dumps({
                "available": {k: v for k, v in limits.items() if v < sys.maxsize},
                "ready": [name(job) for job in selectable],
                "ours": [name(job) for job in ours],
                "greedy": [name(job) for job in theirs],
            }) + "\\n")
        return ours

    plugin.Scheduler.select_jobs = recording
    from snakemake.cli import main
    sys.argv = ["snakemake", *sys.argv[1:]]
    main()
    """
)

SNAKEFILE = """
# start and end stamps (with the io it holds) of the jobs that compete for the limits
STAMPED = (
    "echo start {io} $(date +%s.%N) {{output}} >> stamps.log; sleep 0.5; "
    "echo done > {{output}}; echo end {io} $(date +%s.%N) {{output}} >> stamps.log"
)

rule all:
    input:
        expand("big/{i}.txt", i=range(2)),
        expand("small/{i}.txt", i=range(4)),
        "urgent.txt",
        "grouped/b.txt",
        "piped/out.txt",

rule data:
    output: "data/{size}.bin"
    shell: "head -c {wildcards.size} /dev/zero > {output}"

# equal priority: the big ones have the larger input, so greedy ranks them first
rule big:
    input: "data/5000.bin"
    output: "big/{i}.txt"
    resources: io=60
    shell: STAMPED.format(io=60)

rule small:
    output: "small/{i}.txt"
    resources: io=50
    shell: STAMPED.format(io=50)

rule urgent:
    output: "urgent.txt"
    priority: 5
    resources: io=50
    shell: STAMPED.format(io=50)

rule grouped_a:
    output: "grouped/a.txt"
    group: "g"
    resources: io=30
    shell: "echo a > {output}"

rule grouped_b:
    input: "grouped/a.txt"
    output: "grouped/b.txt"
    group: "g"
    resources: io=30
    shell: "cat {input} > {output}"

rule producer:
    output: pipe("piped/stream")
    resources: io=20
    shell: "echo streamed > {output}"

rule consumer:
    input: "piped/stream"
    output: "piped/out.txt"
    resources: io=20
    shell: "cat {input} > {output}"
"""


def test_the_plugin_selects_as_greedy_on_every_selection_of_a_real_run(tmp_path):
    write_snakefile(tmp_path, SNAKEFILE)
    selections = tmp_path / "selections.jsonl"
    argv = [sys.executable, "-c", RECORDING_SNAKEMAKE, "--executor", "matensemble"]
    argv += ["-j", "2", "--resources", "io=100", "--scheduler", "matensemble"]
    argv += ["--matensemble-local-cores", "4"]
    run = subprocess.run(
        argv,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=240,
        env={**os.environ, "SELECTIONS": str(selections)},
    )
    assert run.returncode == 0, run.stdout
    assert (tmp_path / "piped/out.txt").read_text() == "streamed\n"
    assert (tmp_path / "grouped/b.txt").read_text() == "a\n"
    records = [json.loads(line) for line in selections.read_text().splitlines()]
    assert records, run.stdout
    for record in records:
        assert record["ours"] == record["greedy"], record
        assert record["available"]["_nodes"] <= 2, record  # -j 2 is _nodes
        assert record["available"]["io"] <= 100, record
    # selections where the limits bound (not every ready job fit): a real choice
    assert any(len(r["ours"]) < len(r["ready"]) for r in records), records
    # the first selection: the priority-5 job among the 8 ready ones
    first = records[0]
    assert len(first["ready"]) >= 7, first
    assert any(name.startswith("urgent") for name in first["ours"]), first
    # the limits held while the jobs ran (their own stamps)
    running, io = peak_use(tmp_path / "stamps.log")
    assert running <= 2, (tmp_path / "stamps.log").read_text()
    assert io <= 100, (tmp_path / "stamps.log").read_text()


def peak_use(stamps: Path) -> tuple[int, int]:
    """The most stamped jobs running at once, and the most io they held."""
    events = []
    for line in stamps.read_text().splitlines():
        what, mem, when, _ = line.split()
        step = 1 if what == "start" else -1  # at one instant, ends come first
        events.append((float(when), step, step * int(mem)))
    running = memory = peak_running = peak_memory = 0
    for _, step, mem in sorted(events):
        running, memory = running + step, memory + mem
        peak_running, peak_memory = max(peak_running, running), max(peak_memory, memory)
    return peak_running, peak_memory
