"""The direct path for every kind of rule it takes: script:, groups, and the fallback.

Each test runs real snakemake processes (this executor) and checks the files,
the path the log says each rule took, and what a second run decides.
"""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
import time
from importlib import metadata

import pytest

from ..helpers import run_snakemake, write_snakefile

CHAIN = """
rule all:
    input: expand("out/{g}.2.txt", g=range(2))

rule first:
    output: "out/{g}.0.txt"
    group: "chain"
    log: "logs/{g}.log"
    shell: "echo {wildcards.g} > {output}; echo first-ran > {log}"

rule next:
    input: lambda wc: f"out/{wc.g}.{int(wc.k) - 1}.txt"
    output: "out/{g}.{k}.txt"
    wildcard_constraints: k="[1-9]"
    group: "chain"
    shell:
        "test {wildcards.g} != {FAIL} || test {wildcards.k} != 2; "
        "cat {input} > {output}; echo {wildcards.k} >> {output}"
"""


def test_group_members_run_directly_in_order(tmp_path):
    write_snakefile(tmp_path, CHAIN.replace("{FAIL}", "none"))
    run = run_snakemake(tmp_path)
    assert run.returncode == 0, run.output
    assert "group chain runs its members' commands directly" in run.output
    assert "per-job Snakemake process" not in run.output
    assert (tmp_path / "out/1.2.txt").read_text() == "1\n1\n2\n"
    assert (tmp_path / "logs/0.log").read_text() == "first-ran\n"
    group_logs = sorted(
        (tmp_path / ".snakemake/matensemble_logs/group_chain").glob("*/attempt1.log")
    )
    assert len(group_logs) == 2  # one per group job
    assert "group member next" in group_logs[0].read_text()
    assert "Nothing to be done" in run_snakemake(tmp_path).output


def test_failing_group_member_fails_the_group_with_reason_and_log(tmp_path):
    write_snakefile(tmp_path, CHAIN.replace("{FAIL}", "1"))
    run = run_snakemake(tmp_path, "--keep-going")
    assert run.returncode != 0
    assert (tmp_path / "out/0.2.txt").exists()
    assert not (tmp_path / "out/1.2.txt").exists()
    assert not (tmp_path / "out/1.1.txt").exists()  # Snakemake removes a failed group's outputs
    (message,) = [line for line in run.output.splitlines() if "matensemble: group-chain" in line]
    assert "exited with code 1" in message
    assert "Log: " in message
    log = message.split("Log: ")[1].strip()
    assert "group member next" in (tmp_path / log).read_text()
    assert "failed (1)" in (tmp_path / log).read_text()


def test_script_rules_run_directly_with_snakemakes_object(tmp_path):
    write_snakefile(
        tmp_path,
        """
        rule all:
            input: expand("out/{i}.txt", i=range(2))

        rule py:
            output: "out/{i}.txt"
            params: double=lambda wc: 2 * int(wc.i)
            threads: 2
            script: "make.py"
        """,
    )
    (tmp_path / "make.py").write_text(
        "import os\n"
        "with open(snakemake.output[0], 'w') as out:\n"
        "    out.write(f'{snakemake.params.double} {snakemake.threads} "
        '{os.environ["OMP_NUM_THREADS"]}\\n\')\n'
    )
    run = run_snakemake(tmp_path)
    assert run.returncode == 0, run.output
    assert "rule py (script) runs its command directly" in run.output
    assert (tmp_path / "out/1.txt").read_text() == "2 2 2\n"
    assert not list((tmp_path / ".snakemake/scripts").glob("*")), "scripts are cleaned up"


@pytest.mark.parametrize("flag", ["--matensemble-per-job-snakemake"])
def test_opting_out_still_gives_the_same_files(tmp_path, flag):
    write_snakefile(tmp_path, CHAIN.replace("{FAIL}", "none"))
    run = run_snakemake(tmp_path, flag)
    assert run.returncode == 0, run.output
    assert "runs through a per-job Snakemake process" in run.output
    assert (tmp_path / "out/1.2.txt").read_text() == "1\n1\n2\n"


def test_a_changed_snakemake_internal_falls_back_to_the_per_job_command(tmp_path):
    """A Snakemake whose run_wrapper changed: one warning naming the version,
    every job through Snakemake's per-job command, the same files."""
    write_snakefile(tmp_path, CHAIN.replace("{FAIL}", "none"))
    changed = (
        "import snakemake.executors.local as local\n"
        "original = local.run_wrapper\n"
        "local.run_wrapper = lambda *args: original(*args)  # same work, other signature\n"
        "from snakemake.cli import main\n"
        "import sys\n"
        "sys.argv = ['snakemake', *sys.argv[1:]]\n"
        "main()\n"
    )
    process = subprocess.run(
        [sys.executable, "-c", changed, "--executor", "matensemble", "-j", "unlimited"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = process.stdout + process.stderr
    assert process.returncode == 0, output
    (warning,) = [line for line in output.splitlines() if "differs from what this plugin" in line]
    assert metadata.version("snakemake") in warning
    assert "run_wrapper" in warning
    assert "group chain runs through a per-job Snakemake process" in output
    assert (tmp_path / "out/1.2.txt").read_text() == "1\n1\n2\n"


def test_group_members_see_the_gpus_the_backend_gave_the_group(tmp_path):
    write_snakefile(
        tmp_path,
        """
        rule all:
            input: "b.txt"

        rule a:
            output: "a.txt"
            group: "g"
            resources: gpu=1
            shell: "echo $CUDA_VISIBLE_DEVICES $OMP_NUM_THREADS > {output}"

        rule b:
            input: "a.txt"
            output: "b.txt"
            group: "g"
            threads: 2
            shell: "cat {input} > {output}; echo $CUDA_VISIBLE_DEVICES $OMP_NUM_THREADS >> {output}"
        """,
    )
    run = run_snakemake(tmp_path, "--matensemble-local-gpus", "2")
    assert run.returncode == 0, run.output
    assert "group g runs its members' commands directly" in run.output
    first, second = (tmp_path / "b.txt").read_text().splitlines()
    gpu_a, threads_a = first.split()
    gpu_b, threads_b = second.split()
    assert gpu_a == gpu_b
    assert gpu_a in {"0", "1"}  # one of the two declared GPUs, the group's
    assert (threads_a, threads_b) == ("1", "2")  # each member's own threads


LONG_CHAIN = """
rule all:
    input: "out/9.txt"

rule first:
    output: "out/0.txt"
    group: "chain"
    shell: "echo 0 > {output}"

rule next:
    input: lambda wc: f"out/{int(wc.k) - 1}.txt"
    output: "out/{k}.txt"
    wildcard_constraints: k="[1-9]"
    group: "chain"
    shell: "cat {input} > {output}; echo {wildcards.k} >> {output}"
"""


def test_a_group_of_ten_levels_leaves_mtimes_in_order(tmp_path):
    """Snakemake touches a group's outputs level by level with a pause between
    levels; the plugin shortens the pause to the file system's mtime step, and
    every level must still be strictly newer than the one before."""
    write_snakefile(tmp_path, LONG_CHAIN)
    run = run_snakemake(tmp_path, "--verbose")
    assert run.returncode == 0, run.output
    assert "between a group job's levels" in run.output
    mtimes = [(tmp_path / f"out/{k}.txt").stat().st_mtime_ns for k in range(10)]
    assert all(later > earlier for earlier, later in itertools.pairwise(mtimes)), mtimes
    assert (tmp_path / "out/9.txt").read_text().split() == [str(k) for k in range(10)]
    assert "Nothing to be done" in run_snakemake(tmp_path).output


PIPES_AND_SERVICE = """
rule all:
    input: "counted.txt", "asked.txt"

rule produce:
    output: pipe("numbers.pipe")
    shell: "for n in 3 1 2; do echo $n; done > {output}"

rule count:
    input: "numbers.pipe"
    output: "counted.txt"
    shell: "sort {input} > {output}; test {FAIL} = none"

rule serve:
    output: service("served.link")
    shell:
        "echo served > served.data; sleep 0.5; ln -s served.data {output}; "
        "sleep 120 & wait  # MARKER-{MARKER}"

rule ask:
    input: "served.link"
    output: "asked.txt"
    shell: "cat {input} > {output}"
"""


def _still_running(marker: str) -> list[str]:
    import psutil

    return [
        " ".join(p.info["cmdline"] or [])
        for p in psutil.process_iter(["cmdline"])
        if marker in " ".join(p.info["cmdline"] or [])
    ]


def test_pipe_and_service_groups_run_directly_and_leave_nothing_running(tmp_path):
    """Members joined by pipe() run together; a service's consumers start once
    its output is there (it appears late here), and the service, with the
    process it started, is terminated once they are done."""
    marker = tmp_path.name
    write_snakefile(
        tmp_path, PIPES_AND_SERVICE.replace("{FAIL}", "none").replace("{MARKER}", marker)
    )
    run = run_snakemake(tmp_path)
    assert run.returncode == 0, run.output
    assert "per-job Snakemake process" not in run.output
    assert run.output.count("runs its members' commands directly") == 2, run.output
    assert (
        "group of rules count, produce runs its members' commands directly, "
        "in order, pipe() and service() members together"
    ) in run.output
    assert (tmp_path / "counted.txt").read_text() == "1\n2\n3\n"
    assert (tmp_path / "asked.txt").read_text() == "served\n"
    assert not (tmp_path / "served.link").exists()  # Snakemake removes service outputs
    assert not (tmp_path / "numbers.pipe").exists()
    assert _still_running(f"MARKER-{marker}") == []
    assert "Nothing to be done" in run_snakemake(tmp_path).output


def test_a_failing_pipe_consumer_fails_its_group_and_stops_the_producer(tmp_path):
    marker = tmp_path.name
    snakefile = PIPES_AND_SERVICE.replace("{FAIL}", "fail").replace("{MARKER}", marker)
    # the producer goes on after it closed the pipe: only the failure stops it
    producer = "for n in 3 1 2; do echo $n; done > {output}"
    assert producer in snakefile
    snakefile = snakefile.replace(producer, f"{producer}; sleep 30 & wait  # PRODUCER-{marker}")
    write_snakefile(tmp_path, snakefile)
    started = time.monotonic()
    run = run_snakemake(tmp_path, "--keep-going")
    assert run.returncode != 0
    assert time.monotonic() - started < 20, "the producer was waited for, not stopped"
    assert not (tmp_path / "counted.txt").exists()
    assert (tmp_path / "asked.txt").exists()  # the other group is not affected
    logs = list((tmp_path / ".snakemake/matensemble_logs").glob("group_*/*/attempt1.log"))
    failed = r"group member count \(jobid \d+\) failed \(1\)"
    assert any(re.search(failed, log.read_text()) for log in logs), run.output
    assert _still_running(f"PRODUCER-{marker}") == []
    assert _still_running(f"MARKER-{marker}") == []


def test_a_group_of_one_runs_its_members_command_without_the_runner(tmp_path):
    """Independent jobs with the same group: are one group job each (no
    --group-components): each runs its own command, with no runner around it."""
    write_snakefile(
        tmp_path,
        """
        rule all:
            input: expand("out/{i}.txt", i=range(2))

        rule alone:
            output: "out/{i}.txt"
            group: "alone"
            shell: "echo {wildcards.i} $MATENSEMBLE_TEST_ENV > {output}; echo logged"
        """,
    )
    run = run_snakemake(tmp_path, env={"MATENSEMBLE_TEST_ENV": "kept"})
    assert run.returncode == 0, run.output
    assert "group alone runs its members' commands directly" in run.output
    assert (tmp_path / "out/1.txt").read_text() == "1 kept\n"
    logs = sorted((tmp_path / ".snakemake/matensemble_logs/group_alone").glob("*/attempt1.log"))
    assert len(logs) == 2
    assert all(log.read_text() == "logged\n" for log in logs)  # no runner headers
