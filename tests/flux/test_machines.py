"""Simulated allocations of the target machines, run with the shipped profiles.

A Flux test instance whose four ranks look like four nodes of the machine
(``--test-hosts``, a resource set with the node's cores and GPUs,
``resource.noverify``) runs the shipped gpu-ensemble workflow with the
machine's shipped profile, by the command the docs give. From what the jobs
saw (their GPU ids, node and start/end stamps): each saw exactly the GPU it
asked for, and no two jobs used one GPU of one node at the same time. Per job,
against Flux's records: the GPUs Flux assigned are exactly the ones the job
saw, Flux never gave one GPU of one node to two jobs at once, and every job got
the cores it asked for. An MPI job with ``nodes=2`` spans two nodes, each task
with its own GPU.
"""

from __future__ import annotations

import itertools
import json
import shlex
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..helpers import write_snakefile
from ..recipes import snakemake_of
from .fluxenv import (
    fluxion_available,
    requires_flux,
    run_in_flux,
    skip_reason,
)
from .scripts import DUMP, declared_resources

ROOT = Path(__file__).parents[2]
pytestmark = [
    requires_flux,
    pytest.mark.flux,
    pytest.mark.snakemake_independent,
    pytest.mark.skipif(
        skip_reason() is None and not fluxion_available(),
        reason="no Fluxion: GPUs are scheduled by Fluxion (sched-simple has none)",
    ),
]


@dataclass(frozen=True)
class Machine:
    profile: str
    recipe: str  # the docs' launch recipe whose snakemake command this runs
    hosts: str
    cores: int
    gpus: int


MACHINES = {
    "frontier": Machine("frontier", "frontier", "frontier[00001-00004]", 56, 8),
    "perlmutter": Machine("perlmutter", "perlmutter", "nid[001001-001004]", 64, 4),
    "flux-allocation": Machine("flux-allocation", "slurm", "node[1-4]", 16, 2),
}


def documented_snakemake(machine: Machine, *args: str) -> str:
    """The snakemake command of the machine's launch recipe (docs, README, profile
    comments), with ``-s Snakefile`` replaced by ``args``."""
    words = shlex.split(snakemake_of(machine.recipe))
    assert words[:3] == ["snakemake", "--profile", f"workflows/profiles/{machine.profile}"]
    at = words.index("-s")
    return shlex.join([*words[:at], *words[at + 2 :], *args])


def run_profile(machine: Machine, workdir: Path, *args: str, timeout: float = 240):
    """The recipe's ``snakemake --profile workflows/profiles/<machine> ...`` inside the
    simulated machine, from the repository root; returns (process, jobs)."""
    dump = workdir / "flux-jobs.json"
    command = documented_snakemake(machine, *args)
    here = Path(sys.executable).parent  # `snakemake` of this environment, by name
    script = [
        "bash",
        "-c",
        f"PATH={here}:$PATH {command}; rc=$?; {sys.executable} {DUMP} {dump}; exit $rc",
    ]
    process = run_in_flux(
        script,
        cwd=ROOT,
        size=4,
        timeout=timeout,
        options=declared_resources(workdir, machine.hosts, machine.cores, machine.gpus),
    )
    jobs = [json.loads(line) for line in dump.read_text().splitlines()] if dump.exists() else []
    return process, jobs


def assigned(job: dict) -> dict[str, set[str]]:
    """rank -> the GPU ids Flux assigned to ``job`` there."""
    return {
        rank: set(_ids(item.get("gpu", "")))
        for item in job["R_lite"]
        for rank in _ids(item["rank"])  # R_lite joins ranks with equal children ("0-1")
    }


def _ids(idset: str) -> list[str]:
    ids: list[str] = []
    for part in filter(None, idset.split(",")):
        first, _, last = part.partition("-")
        ids += [str(i) for i in range(int(first), int(last or first) + 1)]
    return ids


def by_id(jobs: list[dict]) -> dict[str, dict]:
    table = {}
    for job in jobs:
        table[str(job["id"])] = job
        table[job["id_f58"]] = job
    return table


def assert_no_gpu_held_twice(jobs: list[dict]) -> None:
    held: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for job in jobs:
        if not job.get("t_run"):
            continue
        for rank, gpus in assigned(job).items():
            for gpu in gpus:
                held[(rank, gpu)].append((job["t_run"], job.get("t_cleanup") or job["t_run"]))
    for (rank, gpu), spans in held.items():
        spans.sort()
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert start >= end, f"GPU {gpu} of rank {rank} held by two jobs at once"


def assert_no_gpu_used_twice(records: list[dict], gpus_per_node: int) -> None:
    """From what the jobs themselves saw (not Flux's records): each job saw
    exactly the one GPU it asked for, one the node has, and no GPU of a node
    was seen by two jobs running at the same time (each job's own start and end
    stamps)."""
    used: dict[tuple[str, str], list[tuple[float, float, str]]] = defaultdict(list)
    for record in records:
        gpus = record["gpu_ids"]
        assert len(gpus) == 1, f"a one-GPU job saw GPUs {gpus}: {record['visible']}"
        assert gpus[0] in {str(i) for i in range(gpus_per_node)}, record["visible"]
        used[(record["node"], gpus[0])].append(
            (record["start"], record["end"], record["flux_job_id"])
        )
    for (node, gpu), spans in used.items():
        spans.sort()
        for (_, end, first), (start, _, second) in itertools.pairwise(spans):
            assert start >= end, f"GPU {gpu} of {node} used by jobs {first} and {second} at once"


@pytest.mark.parametrize("name", sorted(MACHINES))
def test_gpu_ensemble_with_the_machines_profile(tmp_path, name):
    machine = MACHINES[name]
    jobs_wanted = 4 * machine.gpus + 3  # more than the GPUs: some jobs must wait for one
    process, jobs = run_profile(
        machine,
        tmp_path,
        "-s",
        "workflows/gpu-ensemble/Snakefile",
        "-d",
        str(tmp_path / "run"),
        "--config",
        f"jobs={jobs_wanted}",
        "matrix_size=64",
        "repeats=1",
    )
    assert process.returncode == 0, process.stdout[-4000:]
    assert (tmp_path / "run" / "gpu_binding.png").exists()
    table = by_id(jobs)
    records = [json.loads(p.read_text()) for p in (tmp_path / "run" / "tasks").glob("*.json")]
    assert len(records) == jobs_wanted
    assert_no_gpu_used_twice(records, machine.gpus)
    for record in records:
        job = table[record["flux_job_id"]]
        gpus = assigned(job)
        assert len(gpus) == 1, f"a one-GPU job on {len(gpus)} ranks: {job['R_lite']}"
        (seen,) = gpus.values()
        assert len(seen) == 1
        assert set(record["gpu_ids"]) == seen, (record["visible"], job["R_lite"])
        assert record["visible"]["CUDA_VISIBLE_DEVICES"] == next(iter(seen))
        assert [len(_ids(item["core"])) for item in job["R_lite"]] == [1]
    assert_no_gpu_held_twice(jobs)


def test_a_two_node_mpi_job_spans_two_nodes_with_a_gpu_per_task(tmp_path):
    machine = MACHINES["frontier"]
    write_snakefile(
        tmp_path / "run",
        """
        rule all:
            input: "ranks.txt"

        rule mpi:
            output: "ranks.txt"
            threads: 7
            resources: tasks=2, nodes=2, gpus_per_task=1, runtime=5
            shell:
                "echo $FLUX_JOB_ID $FLUX_TASK_RANK $CUDA_VISIBLE_DEVICES "
                "$(nproc) >> {output}"
        """,
    )
    run = tmp_path / "run"
    process, jobs = run_profile(machine, tmp_path, "-s", str(run / "Snakefile"), "-d", str(run))
    assert process.returncode == 0, process.stdout[-4000:]
    lines = [line.split() for line in (tmp_path / "run" / "ranks.txt").read_text().splitlines()]
    assert sorted(line[1] for line in lines) == ["0", "1"]
    (job_id,) = {line[0] for line in lines}
    job = by_id(jobs)[job_id]
    gpus = assigned(job)
    assert len(gpus) == 2, f"nodes=2 ran on ranks {sorted(gpus)}"
    assert all(len(ids) == 1 for ids in gpus.values())
    assert sorted(line[2] for line in lines) == sorted(next(iter(g)) for g in gpus.values())
    cores = {r: len(_ids(i["core"])) for i in job["R_lite"] for r in _ids(i["rank"])}
    assert sorted(cores.values()) == [7, 7]
