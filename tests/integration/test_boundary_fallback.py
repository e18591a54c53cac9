"""The boundary to Snakemake's internals, seen from outside.

* Each internal the plugin reads of a job (``facts.JOB_FACTS``), hidden from
  the plugin as a rename in a later Snakemake would hide it, is found missing
  by the start-up probe, and the run takes Snakemake's per-job path with the
  results of a normal run.
* After a run in this process (``snakemake.cli.main``, through
  ``snakemake.api``), every Snakemake module the plugin changed is as before.

Each run is a child forked from the test process (Snakemake and the plugin
imported once), so that what a run leaves in its process stays there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

from snakemake_executor_plugin_matensemble.snakemake_boundary import probe
from snakemake_executor_plugin_matensemble.snakemake_boundary.facts import JOB_FACTS

from ..hidden_internals import hidden

SNAKEFILE = """
rule all:
    input: expand("out/{i}.txt", i=["a"]), "group/b.txt"

rule work:
    output: "out/{i}.txt"
    params: word=lambda wildcards: wildcards.i.upper()
    threads: 2
    log: "logs/{i}.log"
    shell: "echo {wildcards.i} {params.word} threads={threads} > {output}; echo done > {log}"

rule first:
    output: temp("group/a.txt")
    group: "g"
    shell: "echo first > {output}"

rule second:
    input: "group/a.txt"
    output: "group/b.txt"
    group: "g"
    threads: 64
    shell: "cat {input} > {output}; echo threads={threads} >> {output}"
"""

ARGS = ["--executor", "matensemble", "-j", "unlimited", "--matensemble-backend", "local"]
ARGS += ["--matensemble-local-cores", "2"]


def _child(workdir: Path, argv: list[str], check: str | None, owner_name) -> None:
    """In the forked child: hide, run Snakemake in this process, check; never returns."""
    code = 1
    try:
        out = os.open(workdir / "output.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(out, 1)
        os.dup2(out, 2)
        sys.stdout = sys.__stdout__ = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = sys.__stderr__ = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        os.chdir(workdir)
        from snakemake.cli import main

        def run() -> int:
            try:
                main(argv)
            except SystemExit as exit_:
                return exit_.code if isinstance(exit_.code, int) else int(bool(exit_.code))
            return 0

        if owner_name is None:
            code = run()
        else:
            with hidden(*owner_name):
                code = run()
        if code == 0 and check == "restored":
            code = _modules_restored()
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _modules_restored() -> int:
    import asyncio

    import snakemake.jobs

    shell_module = sys.modules["snakemake.shell"]
    changed = []
    if shell_module.sp is not subprocess:
        changed.append(f"snakemake.shell.sp is {shell_module.sp!r}")
    if snakemake.jobs.asyncio is not asyncio:
        changed.append(f"snakemake.jobs.asyncio is {snakemake.jobs.asyncio!r}")
    if snakemake.jobs.wait_for_files.__module__ != "snakemake.io":
        changed.append(f"snakemake.jobs.wait_for_files is {snakemake.jobs.wait_for_files!r}")
    for line in changed:
        print(f"NOT RESTORED: {line}", flush=True)
    return 3 if changed else 0


def run_in_process(workdir: Path, hide=None, check: str | None = None) -> tuple[int, str]:
    import snakemake.api  # noqa: F401 - import before forking: each child starts warm

    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "Snakefile").write_text(SNAKEFILE)
    pid = os.fork()
    if pid == 0:
        _child(workdir, [*ARGS], check, hide)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), (workdir / "output.txt").read_text()


def products(workdir: Path) -> dict[str, str]:
    return {
        str(path.relative_to(workdir)): path.read_text()
        for path in sorted(workdir.rglob("*"))
        if path.is_file() and path.relative_to(workdir).parts[0] in {"out", "logs", "group"}
    }


@pytest.fixture(scope="module")
def normal_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("normal") / "w"
    code, output = run_in_process(workdir, check="restored")
    assert code == 0, output
    return products(workdir), output


def test_a_run_in_process_leaves_snakemakes_modules_as_they_were(normal_run):
    results, output = normal_run
    assert "NOT RESTORED" not in output
    assert "runs its command directly" in output  # the capture was installed
    assert "runs its members' commands directly" in output  # and the group's patches
    assert results["out/a.txt"] == "a A threads=2\n"
    assert results["group/b.txt"] == "first\nthreads=2\n"  # lowered to the 2 cores
    assert "group/a.txt" not in results  # temp, removed


@pytest.mark.parametrize(("owner", "name"), [entry[:2] for entry in JOB_FACTS])
def test_the_probe_finds_each_job_internal_missing(owner, name):
    with hidden(owner, name):
        capabilities = probe()
    assert not capabilities.job_facts
    assert capabilities.problems == (f"{owner}.{name}",)
    assert probe().job_facts


#: one of each kind of internal (a Job property, a Job slot, a Rule instance
#: attribute, a file's property, what decides retries): without any one of
#: :data:`JOB_FACTS` the probe switches the same thing off (the test above)
END_TO_END = [
    ("Job", "is_shadow"),
    ("Job", "wildcards_dict"),
    ("Rule", "shellcmd"),
    ("IOFile", "is_storage"),
    ("Job", "restart_times"),
]


@pytest.mark.parametrize(("owner", "name"), END_TO_END)
def test_without_a_job_internal_jobs_run_per_job_with_the_same_results(
    tmp_path, normal_run, owner, name
):
    code, output = run_in_process(tmp_path / "w", hide=(owner, name))
    assert code == 0, output
    assert f"differs from what this plugin knows ({owner}.{name})" in output
    assert "runs its command directly" not in output
    assert "runs its members' commands directly" not in output
    assert "runs through a per-job Snakemake process" in output
    expected, _ = normal_run
    assert products(tmp_path / "w") == expected
