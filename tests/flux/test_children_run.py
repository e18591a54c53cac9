"""Child Flux instances in real runs (``--matensemble-flux-children``).

ONE Flux test instance of 4 brokers whose ranks look like 4 nodes of 16 cores
and 2 GPUs (``resource.noverify``) runs real ``snakemake`` four times, one
after the other (one instance, to keep this file's cost in CI to one start-up):

1. the shipped gpu-ensemble workflow with ``--matensemble-flux-children 2``
   (children of 2 ranks);
2. a workflow with an MPI job over the 2 nodes of one child and a job of 3
   nodes (more than one child), with ``--matensemble-flux-children 2``;
3. and 4. a small workflow with ``--matensemble-flux-children off`` and with
   ``auto`` (4 nodes: below the size where children pay).

Then every job of the enclosing instance is dumped. What is asserted comes from
the jobs' own records (the GPU and cores each job saw, which broker ran it),
from Flux (which jobs ran in the enclosing instance), and from the run's log
and journal.
"""

from __future__ import annotations

import itertools
import json
import shlex
import sys
from pathlib import Path

import pytest

from ..helpers import SNAKEMAKE, write_snakefile
from .fluxenv import fluxion_available, requires_flux, run_in_flux, skip_reason
from .scripts import DUMP, declared_resources
from .test_machines import assert_no_gpu_used_twice

ROOT = Path(__file__).parents[2]
HOSTS, CORES, GPUS = "node[1-4]", 16, 2
GPU_JOBS = 4 * GPUS + 3  # more than the GPUs: some jobs wait for one

pytestmark = [
    requires_flux,
    pytest.mark.flux,
    pytest.mark.snakemake_independent,
    pytest.mark.skipif(
        skip_reason() is None and not fluxion_available(),
        reason="no Fluxion: GPUs are scheduled by Fluxion (sched-simple has none)",
    ),
]

MPI_AND_BIG = """
rule all:
    input: "mpi.txt", "big.txt"

rule mpi:
    output: "mpi.txt"
    threads: 3
    resources: tasks=2, nodes=2, gpus_per_task=1, runtime=5
    shell:
        "echo $FLUX_JOB_ID $FLUX_TASK_RANK $CUDA_VISIBLE_DEVICES "
        "$(nproc) "
        "$(flux getattr parent-uri 2>/dev/null || echo none) >> {output}"

rule big:
    output: "big.txt"
    threads: 2
    resources: tasks=3, nodes=3, runtime=5
    shell: "echo $FLUX_JOB_ID $FLUX_TASK_RANK $FLUX_URI >> {output}"
"""

SMALL = """
rule all:
    input: expand("small/{i}.txt", i=range(3))

rule one:
    output: "small/{i}.txt"
    shell: "echo $FLUX_JOB_ID > {output}"
"""


def snakemake(workdir: Path, *args: str) -> str:
    here = Path(sys.executable).parent  # `snakemake` of this environment
    command = [*SNAKEMAKE, "--executor", "matensemble", "-j", "unlimited", "-d", str(workdir)]
    return f"PATH={here}:$PATH " + shlex.join([*command, *args]) + f" > {workdir}/log.txt 2>&1"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The four runs in one test instance; their directories, exit codes and
    the enclosing instance's jobs."""
    base = tmp_path_factory.mktemp("children")
    dirs = {name: base / name for name in ("gpu", "mpi", "off", "auto")}
    write_snakefile(dirs["mpi"], MPI_AND_BIG)
    for name in ("off", "auto"):
        write_snakefile(dirs[name], SMALL)
    dirs["gpu"].mkdir()
    gpu_config = ["--config", f"jobs={GPU_JOBS}", "matrix_size=32", "repeats=1"]
    steps = [
        snakemake(
            dirs["gpu"],
            "-s",
            str(ROOT / "workflows/gpu-ensemble/Snakefile"),
            "--matensemble-flux-children",
            "2",
            *gpu_config,
        ),
        snakemake(
            dirs["mpi"], "-s", str(dirs["mpi"] / "Snakefile"), "--matensemble-flux-children", "2"
        ),
        snakemake(
            dirs["off"], "-s", str(dirs["off"] / "Snakefile"), "--matensemble-flux-children", "off"
        ),
        snakemake(dirs["auto"], "-s", str(dirs["auto"] / "Snakefile")),
    ]
    script = "; ".join(
        f"{step}; echo $? > {d}/rc.txt" for step, d in zip(steps, dirs.values(), strict=True)
    )
    script += f"; {sys.executable} {DUMP} {base}/jobs.json"
    process = run_in_flux(
        ["bash", "-c", script],
        cwd=base,
        size=4,
        timeout=400,
        options=declared_resources(base, HOSTS, CORES, GPUS),
    )
    jobs_file = base / "jobs.json"
    jobs = (
        [json.loads(line) for line in jobs_file.read_text().splitlines()]
        if jobs_file.exists()
        else []
    )
    return {"dirs": dirs, "process": process, "jobs": jobs}


def ran(runs: dict, name: str) -> Path:
    workdir = runs["dirs"][name]
    log = (
        (workdir / "log.txt").read_text()
        if (workdir / "log.txt").exists()
        else runs["process"].stdout
    )
    assert (workdir / "rc.txt").read_text().strip() == "0", log[-4000:]
    return workdir


def enclosing_ids(runs: dict) -> set[str]:
    return {str(job["id"]) for job in runs["jobs"]} | {job["id_f58"] for job in runs["jobs"]}


def children_of(runs: dict) -> list[dict]:
    return [job for job in runs["jobs"] if job["name"].startswith("matensemble-child-")]


def test_the_gpu_ensemble_runs_in_the_children_each_job_on_its_own_gpu_and_core(runs):
    workdir = ran(runs, "gpu")
    assert (workdir / "gpu_binding.png").exists()
    records = [json.loads(p.read_text()) for p in (workdir / "tasks").glob("*.json")]
    assert len(records) == GPU_JOBS
    assert_no_gpu_used_twice(records, GPUS)
    for record in records:
        # it ran in a child (no job of the enclosing instance), on one core of its own
        assert record["flux_job_id"] not in enclosing_ids(runs), record
        assert " of " in record["node"], record  # a child's broker rank
        assert len(record["cpus"]) == 1, record
        assert record["visible"]["CUDA_VISIBLE_DEVICES"] == record["gpu_ids"][0]
    # both children ran jobs, and no two jobs of one node shared a core at once
    assert len({record["node"].split(" of ")[1] for record in records}) == 2
    by_core: dict = {}
    for record in records:
        for cpu in record["cpus"]:
            by_core.setdefault((record["node"], cpu), []).append((record["start"], record["end"]))
    for spans in by_core.values():
        spans.sort()
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert start >= end, spans
    log = (workdir / "log.txt").read_text()
    assert "started 2 child Flux instances in" in log
    assert "c0 on ranks 0-1, c1 on ranks 2-3" in log


def test_an_mpi_job_runs_in_one_child_and_a_job_over_two_children_in_the_enclosing(runs):
    workdir = ran(runs, "mpi")
    mpi = [line.split() for line in (workdir / "mpi.txt").read_text().splitlines()]
    assert sorted(line[1] for line in mpi) == ["0", "1"]  # two MPI tasks of one job
    (mpi_id,) = {line[0] for line in mpi}
    assert mpi_id not in enclosing_ids(runs)  # it ran in a child
    assert sorted(line[2] for line in mpi) in (["0", "0"], ["0", "1"], ["1", "1"])
    assert all(line[3] == "3" for line in mpi)  # each task on its 3 cores
    # its two tasks ran under the two brokers of ONE child (their parents are
    # enclosing ranks 0-1 or 2-3)
    parents = sorted(int(line[4].rsplit("local-", 1)[1]) for line in mpi)
    assert parents in ([0, 1], [2, 3]), mpi
    big = [line.split() for line in (workdir / "big.txt").read_text().splitlines()]
    assert sorted(line[1] for line in big) == ["0", "1", "2"]
    (big_id,) = {line[0] for line in big}
    assert big_id in enclosing_ids(runs)  # more than one child: the enclosing instance
    journal = [
        json.loads(line)
        for path in (workdir / ".snakemake/matensemble").glob("*/journal.jsonl")
        for line in path.read_text().splitlines()
    ]
    # the journal's start records name the child a job ran in (none for the big job)
    started = {e["backend_id"]: e.get("instance") for e in journal if e["event"] == "started"}
    assert started.keys() == {mpi_id, big_id}
    parent_ranks = {"c0": [0, 1], "c1": [2, 3]}
    assert parent_ranks.get(started[mpi_id]) == parents, started
    assert started[big_id] is None


def test_children_end_with_the_run(runs):
    ran(runs, "gpu")
    ran(runs, "mpi")
    children = children_of(runs)
    assert len(children) == 4  # 2 per run with children
    assert all(job["state"] == "INACTIVE" for job in children), children
    assert {str(job["ranks"]).strip("[]") for job in children} == {"0-1", "2-3"}


@pytest.mark.parametrize("name", ["off", "auto"])
def test_off_and_auto_on_a_small_instance_start_no_child(runs, name):
    workdir = ran(runs, name)
    log = (workdir / "log.txt").read_text()
    assert "no child Flux instances" in log
    assert "started 2 child Flux instances" not in log
    ids = {(workdir / "small" / f"{i}.txt").read_text().strip() for i in range(3)}
    assert ids <= enclosing_ids(runs)  # every job ran in the enclosing instance
