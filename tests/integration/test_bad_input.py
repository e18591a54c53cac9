"""Bad input catalog: every malformed request or setting stops the run before any
job starts, within seconds, with one clear message naming where, what and the fix."""

import time

import pytest

from ..helpers import run_snakemake, write_snakefile

SNAKEFILE = """
rule all:
    input: "innocent.txt", "bad.txt"

rule innocent:
    output: "innocent.txt"
    shell: "touch {{output}}"

rule bad:
    output: "bad.txt"
    {directives}
    shell: "touch {{output}}"
"""

# (case id, rule directives, extra CLI args, words the error must contain)
RESOURCE_CASES = [
    ("threads-negative", "threads: -1", (), ["rule 'bad'", "threads=-1", "at least 1"]),
    ("threads-zero", "threads: 0", (), ["threads=0", "at least 1"]),
    ("tasks-zero", "resources: tasks=0", (), ["tasks=0", "at least 1"]),
    ("tasks-string", 'resources: tasks="many"', (), ["tasks='many'", "whole number"]),
    ("nodes-zero", "resources: nodes=0", (), ["nodes=0", "at least 1"]),
    ("nodes-negative", "resources: nodes=-1", (), ["nodes=-1", "at least 1"]),
    ("nodes-over-tasks", "resources: nodes=3, tasks=2", (), ["nodes=3", "more than tasks=2"]),
    ("gpu-negative", "resources: gpu=-1", (), ["gpu=-1", "at least 0"]),
    (
        "gpu-indivisible",
        "resources: gpu=3, tasks=2",
        ("--matensemble-local-gpus", "4"),
        ["gpu=3", "split evenly among tasks=2"],
    ),
    (
        "gpu-conflict",
        "resources: gpu=2, gpus_per_task=2, tasks=2",
        ("--matensemble-local-gpus", "4"),
        ["gpu=2", "conflicts with gpus_per_task=2"],
    ),
    ("gpus-per-task-negative", "resources: gpus_per_task=-1", (), ["gpus_per_task=-1"]),
    ("runtime-zero", "resources: runtime=0", (), ["runtime=0", "positive"]),
    ("runtime-negative", "resources: runtime=-5", (), ["runtime=-5", "positive"]),
    ("mpi-empty", 'resources: mpi=""', (), ["mpi=''", "MPI launcher"]),
    (
        "exclusive-nonsense",
        'resources: exclusive="maybe"',
        (),
        ["exclusive='maybe'", "true or false"],
    ),
    (
        "cpus-per-task-conflict",
        "threads: 4\n    resources: cpus_per_task=2",
        (),
        ["cpus_per_task=2", "conflicts with threads=4"],
    ),
    ("cpus-per-task-zero", "resources: cpus_per_task=0", (), ["cpus_per_task=0", "at least 1"]),
    ("threads-over-machine", "threads: 4096", (), ["threads=4096", "more cores than any node has"]),
    (
        "gpu-without-gpus",
        "resources: gpu=1",
        ("--matensemble-local-gpus", "none"),
        ["gpu=1", "GPU(s) per task but the largest node has 0"],
    ),
    (
        "nodes-over-allocation",
        "resources: nodes=2, tasks=2",
        (),
        ["nodes=2", "more than the 1 node(s)"],
    ),
    (
        "tasks-over-allocation",
        "threads: 1\n    resources: tasks=100000",
        (),
        ["tasks=100000", "does not fit even on the idle allocation"],
    ),
]

SETTINGS_CASES = [
    ("unknown-policy", ("--matensemble-policy", "random"), ["--matensemble-policy", "random"]),
    ("unknown-backend", ("--matensemble-backend", "slurm"), ["--matensemble-backend", "slurm"]),
    (
        "negative-reserve",
        ("--matensemble-reserve-after", "-1"),
        ["--matensemble-reserve-after=-1.0", "Fix:"],
    ),
    (
        "cores-not-a-list",
        ("--matensemble-local-cores", "abc"),
        ["--matensemble-local-cores='abc'", "Fix:"],
    ),
    (
        "cores-not-usable",
        ("--matensemble-local-cores", "0-4095"),
        ["--matensemble-local-cores='0-4095'", "names CPUs this process may not use"],
    ),
    (
        "urgency-out-of-range",
        ("--matensemble-flux-urgency", "99"),
        ["--matensemble-flux-urgency=99", "outside 0-31"],
    ),
    (
        "negative-grace",
        ("--matensemble-kill-grace-seconds", "-3"),
        ["--matensemble-kill-grace-seconds=-3.0"],
    ),
]


def assert_stopped_before_anything(tmp_path, run, started, words):
    assert run.returncode != 0
    assert time.time() - started < 30, "the error took too long"
    for word in words:
        assert word in run.output, f"{word!r} missing from:\n{run.output[-3000:]}"
    assert not (tmp_path / "innocent.txt").exists(), "a job ran before the error"
    assert not (tmp_path / "bad.txt").exists()


@pytest.mark.parametrize(
    ("directives", "args", "words"),
    [case[1:] for case in RESOURCE_CASES],
    ids=[case[0] for case in RESOURCE_CASES],
)
def test_bad_resource_is_refused_before_any_job(tmp_path, directives, args, words):
    write_snakefile(tmp_path, SNAKEFILE.format(directives=directives))
    started = time.time()
    run = run_snakemake(tmp_path, *args, timeout=60)
    assert_stopped_before_anything(tmp_path, run, started, words)
    assert "Fix:" in run.output


@pytest.mark.parametrize(
    ("args", "words"),
    [case[1:] for case in SETTINGS_CASES],
    ids=[case[0] for case in SETTINGS_CASES],
)
def test_bad_setting_is_refused_before_any_job(tmp_path, args, words):
    write_snakefile(tmp_path, SNAKEFILE.format(directives="threads: 1"))
    started = time.time()
    run = run_snakemake(tmp_path, *args, timeout=60)
    assert_stopped_before_anything(tmp_path, run, started, words)


def test_flux_backend_without_flux_says_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.delenv("FLUX_URI", raising=False)
    write_snakefile(tmp_path, SNAKEFILE.format(directives="threads: 1"))
    started = time.time()
    run = run_snakemake(tmp_path, "--matensemble-backend", "flux", timeout=60)
    assert_stopped_before_anything(
        tmp_path, run, started, ["--matensemble-backend flux was requested but", "Fix:"]
    )


def test_catalog_is_large_enough():
    assert len(RESOURCE_CASES) + len(SETTINGS_CASES) + 1 >= 20
