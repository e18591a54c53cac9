"""Bad input catalog: every malformed request or setting stops the run before any
job starts, within seconds, with one clear message naming where, what and the fix."""

import dataclasses
import subprocess
import time

import pytest

from snakemake_executor_plugin_matensemble.intake.request import READ_RESOURCES
from snakemake_executor_plugin_matensemble.settings import ExecutorSettings

from ..helpers import SNAKEMAKE, run_snakemake, write_snakefile

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

# (case id, resource field, rule directives, extra CLI args, words the error must contain)
RESOURCE_CASES = [
    ("threads-negative", "threads", "threads: -1", (), ["rule 'bad'", "threads=-1", "at least 0"]),
    ("tasks-zero", "tasks", "resources: tasks=0", (), ["tasks=0", "at least 1"]),
    ("tasks-string", "tasks", 'resources: tasks="many"', (), ["tasks='many'", "whole number"]),
    ("nodes-zero", "nodes", "resources: nodes=0", (), ["nodes=0", "at least 1"]),
    ("nodes-negative", "nodes", "resources: nodes=-1", (), ["nodes=-1", "at least 1"]),
    (
        "nodes-over-tasks",
        "nodes",
        "resources: nodes=3, tasks=2",
        (),
        ["nodes=3", "more than tasks=2"],
    ),
    ("gpu-negative", "gpu", "resources: gpu=-1", (), ["gpu=-1", "at least 0"]),
    (
        "gpu-indivisible",
        "gpu",
        "resources: gpu=3, tasks=2",
        ("--matensemble-local-gpus", "4"),
        ["gpu=3", "split evenly among tasks=2"],
    ),
    (
        "gpu-conflict",
        "gpu",
        "resources: gpu=2, gpus_per_task=2, tasks=2",
        ("--matensemble-local-gpus", "4"),
        ["gpu=2", "conflicts with gpus_per_task=2"],
    ),
    (
        "gpus-per-task-negative",
        "gpus_per_task",
        "resources: gpus_per_task=-1",
        (),
        ["gpus_per_task=-1"],
    ),
    ("runtime-zero", "runtime", "resources: runtime=0", (), ["runtime=0", "positive"]),
    ("runtime-negative", "runtime", "resources: runtime=-5", (), ["runtime=-5", "positive"]),
    ("mpi-empty", "mpi", 'resources: mpi=""', (), ["mpi=''", "MPI launcher"]),
    (
        "exclusive-nonsense",
        "exclusive",
        'resources: exclusive="maybe"',
        (),
        ["exclusive='maybe'", "true or false"],
    ),
    (
        "cpus-per-task-conflict",
        "cpus_per_task",
        "threads: 2\n    resources: cpus_per_task=1",
        (),
        ["cpus_per_task=1", "conflicts with threads=2"],
    ),
    (
        "cpus-per-task-zero",
        "cpus_per_task",
        "resources: cpus_per_task=0",
        (),
        ["cpus_per_task=0", "at least 1"],
    ),
    (
        "cpus-per-task-over-machine",
        "cpus_per_task",
        "resources: cpus_per_task=4096",
        (),
        ["cpus_per_task=4096", "more cores than any node has"],
    ),
    (
        "gpu-without-gpus",
        "gpu",
        "resources: gpu=1",
        ("--matensemble-local-gpus", "none"),
        ["gpu=1", "GPU(s) per task but the largest node has 0"],
    ),
    (
        "nodes-over-allocation",
        "nodes",
        "resources: nodes=2, tasks=2",
        (),
        ["nodes=2", "more than the 1 node(s)"],
    ),
    (
        "tasks-over-allocation",
        "tasks",
        "threads: 1\n    resources: tasks=100000",
        (),
        ["tasks=100000", "does not fit even on the idle allocation"],
    ),
]

# (case id, CLI args naming one --matensemble-* flag, words the error must contain)
SETTINGS_CASES = [
    ("unknown-policy", ("--matensemble-policy", "random"), ["--matensemble-policy", "random"]),
    ("unknown-order", ("--matensemble-order", "shortest"), ["--matensemble-order", "shortest"]),
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
        "cores-banana",
        ("--matensemble-local-cores", "banana"),
        ["Error: --matensemble-local-cores='banana' is neither a count nor a CPU list. Fix:"],
    ),
    (
        "cores-not-usable",
        ("--matensemble-local-cores", "0-4095"),
        ["--matensemble-local-cores='0-4095'", "names CPUs this process may not use"],
    ),
    (
        "gpus-malformed",
        ("--matensemble-local-gpus", "0,-1"),
        ["--matensemble-local-gpus='0,-1'", "Fix: give e.g. 2, 0,1, 0-3 or none"],
    ),
    (
        "urgency-out-of-range",
        ("--matensemble-flux-urgency", "99"),
        ["--matensemble-flux-urgency=99", "outside 0-31"],
    ),
    (
        "children-zero",
        ("--matensemble-flux-children", "0"),
        ["--matensemble-flux-children='0' must be at least 1 child instance", "Fix:"],
    ),
    (
        "children-not-a-count",
        ("--matensemble-flux-children", "many"),
        ["--matensemble-flux-children='many' is not off, auto or a number", "Fix:"],
    ),
    (
        "reserve-cores-negative",
        ("--matensemble-flux-reserve-cores", "-1"),
        ["--matensemble-flux-reserve-cores=-1", "Fix:"],
    ),
    (
        "keep-inactive-below-minus-one",
        ("--matensemble-flux-keep-inactive", "-7"),
        ["--matensemble-flux-keep-inactive=-7", "Fix:"],
    ),
    (
        "negative-grace",
        ("--matensemble-kill-grace-seconds", "-3"),
        ["--matensemble-kill-grace-seconds=-3.0"],
    ),
    (
        "negative-status-interval",
        ("--matensemble-status-interval", "-1"),
        ["--matensemble-status-interval=-1.0", "Fix:"],
    ),
    (
        "negative-deadline-margin",
        ("--matensemble-deadline-margin", "-5"),
        ["--matensemble-deadline-margin=-5.0", "Fix:"],
    ),
    (
        "journal-dir-is-a-file",
        ("--matensemble-journal-dir", "Snakefile"),
        ["--matensemble-journal-dir='Snakefile' is a file, not a directory", "Fix:"],
    ),
    (
        "log-dir-is-a-file",
        ("--matensemble-log-dir", "Snakefile"),
        ["--matensemble-log-dir='Snakefile' is a file, not a directory", "Fix:"],
    ),
    (
        "status-file-is-a-directory",
        ("--matensemble-status-file", "."),
        ["--matensemble-status-file='.' is a directory", "Fix:"],
    ),
    (
        "unknown-runtime-estimate",
        ("--matensemble-runtime-estimate", "guess"),
        ["--matensemble-runtime-estimate", "invalid choice: 'guess'"],
    ),
    (
        "unknown-unknown-runtime",
        ("--matensemble-unknown-runtime", "pray"),
        ["--matensemble-unknown-runtime", "invalid choice: 'pray'"],
    ),
    (
        "deadline-unreadable",
        ("--matensemble-deadline", "banana"),
        ["--matensemble-deadline='banana'", "Fix:"],
    ),
]

#: Cases of defects not fixed yet: strict, so each turns red once fixed.
KNOWN_DEFECTS = {}

#: Settings without a case, and why: no value of them can be refused before a
#: job starts on this machine. A new setting must get a case or a reason here.
NOT_IN_CATALOG = {
    "per_job_snakemake": "a flag without a value",
    "flux_no_pin_ranks": "a flag without a value",
    "flux_no_lookahead": "a flag without a value",
    "flux_no_alloc_bypass": "a flag without a value",
    "flux_queue": "free text that only Flux can judge (tests/flux)",
    "flux_bank": "free text that only Flux can judge (tests/flux)",
    "flux_pmi": "free text that only Flux can judge (tests/flux)",
    "flux_shell_options": "read by the flux backend only (tests/unit/test_flux_options.py)",
}


def without_command_line(output: str) -> str:
    """Snakemake's output without its header's ``Command:`` line, which repeats
    the arguments (and so every bad value) whatever the error says."""
    return "\n".join(
        line for line in output.splitlines() if not line.lstrip().startswith("Command:")
    )


def assert_stopped_before_anything(tmp_path, run, started, words):
    assert run.returncode != 0
    assert time.time() - started < 30, "the error took too long"
    output = without_command_line(run.output)
    for word in words:
        assert word in output, f"{word!r} missing from:\n{output[-3000:]}"
    assert not (tmp_path / "innocent.txt").exists(), "a job ran before the error"
    assert not (tmp_path / "bad.txt").exists()


def assert_no_traceback(output):
    """The user sees the message, not the plugin's insides."""
    assert "Traceback" not in output, output[-3000:]
    assert 'File "' not in output, output[-3000:]


@pytest.mark.parametrize(
    ("directives", "args", "words"),
    [case[2:] for case in RESOURCE_CASES],
    ids=[case[0] for case in RESOURCE_CASES],
)
def test_bad_resource_is_refused_before_any_job(tmp_path, directives, args, words):
    write_snakefile(tmp_path, SNAKEFILE.format(directives=directives))
    started = time.time()
    run = run_snakemake(tmp_path, *args, timeout=60)
    assert_stopped_before_anything(tmp_path, run, started, words)
    assert "Fix:" in run.output
    assert_no_traceback(run.output)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        pytest.param(
            *case[1:],
            id=case[0],
            marks=[pytest.mark.xfail(strict=True, reason=KNOWN_DEFECTS[case[0]])]
            if case[0] in KNOWN_DEFECTS
            else [],
        )
        for case in SETTINGS_CASES
    ],
)
def test_bad_setting_is_refused_before_any_job(tmp_path, args, words):
    write_snakefile(tmp_path, SNAKEFILE.format(directives="threads: 1"))
    started = time.time()
    run = run_snakemake(tmp_path, *args, timeout=60)
    assert_stopped_before_anything(tmp_path, run, started, words)
    assert_no_traceback(run.output)


def test_bad_setting_is_one_paragraph_without_a_traceback(tmp_path):
    """``snakemake --executor matensemble -j1 --matensemble-local-cores banana``."""
    write_snakefile(tmp_path, SNAKEFILE.format(directives="threads: 1"))
    process = subprocess.run(
        [*SNAKEMAKE, "--executor", "matensemble", "-j1", "--matensemble-local-cores", "banana"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert process.returncode == 1
    output = without_command_line(process.stdout + process.stderr)
    assert_no_traceback(output)
    errors = [line for line in output.splitlines() if "banana" in line]
    assert errors == [
        "Error: --matensemble-local-cores='banana' is neither a count nor a CPU list. "
        "Fix: give e.g. 4 or 0-3,6"
    ]


def test_a_gpu_job_on_a_machine_without_gpus_is_told_the_flag(tmp_path):
    write_snakefile(tmp_path, SNAKEFILE.format(directives="resources: gpu=1"))
    started = time.time()
    run = run_snakemake(tmp_path, "--matensemble-local-gpus", "none", timeout=60)
    assert_stopped_before_anything(
        tmp_path, run, started, ["gpu=1", "the largest node has 0 GPU(s)"]
    )
    (error,) = [line for line in run.output.splitlines() if "gpu=1" in line]
    assert "--matensemble-local-gpus" in error


def test_flux_backend_without_flux_says_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.delenv("FLUX_URI", raising=False)
    write_snakefile(tmp_path, SNAKEFILE.format(directives="threads: 1"))
    started = time.time()
    run = run_snakemake(tmp_path, "--matensemble-backend", "flux", timeout=60)
    assert_stopped_before_anything(
        tmp_path, run, started, ["--matensemble-backend flux was requested but", "Fix:"]
    )
    assert_no_traceback(run.output)


def test_catalog_cases_are_distinct_and_cover_every_field_and_setting():
    ids = [case[0] for case in (*RESOURCE_CASES, *SETTINGS_CASES)]
    assert len(ids) == len(set(ids)), "case ids repeat"
    # resource cases: each names its field with the value in the error, and no
    # two cases give the same input
    for case_id, field, _directives, _args, words in RESOURCE_CASES:
        assert any(word.startswith(f"{field}=") for word in words), case_id
    inputs = [(case[2], case[3]) for case in RESOURCE_CASES]
    assert len(inputs) == len(set(inputs)), "two resource cases give the same input"
    assert {case[1] for case in RESOURCE_CASES} == READ_RESOURCES
    # settings cases: each gives one flag, which its error names
    covered = set()
    for case_id, args, words in SETTINGS_CASES:
        (flag,) = [arg for arg in args if arg.startswith("--matensemble-")]
        assert any(flag in word for word in words), case_id
        covered.add(flag.removeprefix("--matensemble-").replace("-", "_"))
    settings = {f.name for f in dataclasses.fields(ExecutorSettings)}
    assert covered <= settings, covered - settings
    assert not covered & NOT_IN_CATALOG.keys(), "a setting both has a case and is exempt"
    missing = settings - covered - NOT_IN_CATALOG.keys()
    assert not missing, f"settings without a bad-input case (or a reason): {sorted(missing)}"
