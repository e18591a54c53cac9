"""The boundary to Snakemake's internals: start-up probe, fallback, and the
capture of the process Snakemake's ``shell()`` would start.

The capture is compared with what Snakemake itself starts: the same ``shell()``
call is made once with ``subprocess.Popen`` recorded (Snakemake's real call)
and once captured by the boundary; command, shell and environment must match.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading

import pytest
from snakemake.common import RULEFUNC_CONTEXT_MARKER
from snakemake.shell import shell

from snakemake_executor_plugin_matensemble import snakemake_boundary
from snakemake_executor_plugin_matensemble.snakemake_boundary import (
    Capabilities,
    JobRecord,
    SnakemakeBoundary,
    probe,
)

_RULE_FUNCTION = f"""
def rule_function({RULEFUNC_CONTEXT_MARKER}, conda_env, container_img, env_modules,
                  threads, resources, jobid, is_shell, singularity_args, runtime_paths,
                  conda_base_path, shadow_dir, command):
    shell(command)
"""


def call_like_a_rule(command: str, **context) -> None:
    """Call shell() from a function whose locals look like a rule function's."""
    namespace = {"shell": shell}
    exec(_RULE_FUNCTION, namespace)
    arguments = {
        RULEFUNC_CONTEXT_MARKER: True,
        "conda_env": None,
        "container_img": None,
        "env_modules": None,
        "threads": 3,
        "resources": {"tmpdir": "/scratch/job"},
        "jobid": 1,
        "is_shell": True,
        "singularity_args": "",
        "runtime_paths": None,
        "conda_base_path": None,
        "shadow_dir": None,
        **context,
    }
    namespace["rule_function"](command=command, **arguments)


class RecordedPopen:
    """Stands in for subprocess.Popen: records Snakemake's real call."""

    calls: list[tuple] = []

    def __init__(self, cmd, **kwargs):
        RecordedPopen.calls.append((cmd, kwargs))
        self.pid = -1

    def wait(self, timeout=None):
        return 0


def snakemakes_own_call(monkeypatch, command: str, **context):
    RecordedPopen.calls = []
    with monkeypatch.context() as patch:
        patch.setattr(subprocess, "Popen", RecordedPopen)
        call_like_a_rule(command, **context)
    ((cmd, kwargs),) = RecordedPopen.calls
    return cmd, kwargs.get("executable") or "/bin/sh", kwargs["env"]


def captured_call(command: str, **context):
    capture = snakemake_boundary._install_capture()
    with capture.capturing() as captured:
        call_like_a_rule(command, **context)
    (process,) = captured
    return process.command, process.executable, process.env


def env_modules():
    from snakemake.deployment.env_modules import EnvModules

    return EnvModules("gcc/13", "lammps")


CASES = {
    "plain": {},
    "container": {"container_img": "/images/md.sif", "singularity_args": "--nv"},
    "env-modules": {"env_modules": "env_modules"},
    "conda": {"conda_env": "/envs/ase"},
}


@pytest.mark.parametrize("case", CASES)
def test_captured_process_is_what_snakemake_starts(monkeypatch, case):
    if case == "conda" and shutil.which("conda") is None:
        pytest.skip("conda is not installed here; Snakemake's Conda() needs it")
    context = dict(CASES[case])
    if context.get("env_modules") == "env_modules":
        context["env_modules"] = env_modules()
    command = "echo 'a b' > out.txt"
    expected = snakemakes_own_call(monkeypatch, command, **context)
    assert captured_call(command, **context) == expected
    if case == "container":
        assert "/images/md.sif" in expected[0]
    if case == "env-modules":
        assert "module load gcc/13 lammps" in expected[0]
    cmd, _, env = expected
    assert "set -euo pipefail" in cmd
    assert env["OMP_NUM_THREADS"] == "3"
    assert env["TMPDIR"] == "/scratch/job"


def test_other_threads_are_not_captured(tmp_path):
    capture = snakemake_boundary._install_capture()
    results = []

    def run_elsewhere():
        results.append(capture.Popen(["true"]).wait())

    with capture.capturing() as captured:
        thread = threading.Thread(target=run_elsewhere)
        thread.start()
        thread.join()
    assert results == [0]
    assert captured == []


def test_a_long_command_keeps_its_script_for_the_launch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".snakemake").mkdir()  # as in every run's working directory
    command = "echo " + "x" * (70 * 1024)
    cmd, _, _ = captured_call(command)
    script = cmd.split('"')[-2]
    assert script.startswith(str(tmp_path / ".snakemake/matensemble_sh."))
    with open(script) as stream:
        assert "x" * 1000 in stream.read()


def test_probe_finds_every_internal_of_this_snakemake():
    capabilities = probe()
    assert capabilities.problems == ()
    assert capabilities.direct
    assert capabilities.group_capture
    assert capabilities.upfront_check
    assert capabilities.group_level_pause
    assert capabilities.job_facts
    assert capabilities.group_temp
    assert capabilities.job_priority
    assert capabilities.output_cache


def test_the_group_level_pause_is_shortened_and_given_back(monkeypatch):
    import asyncio

    import snakemake.jobs

    delays = []

    async def recorded_sleep(delay, result=None):
        delays.append(delay)

    monkeypatch.setattr(asyncio, "sleep", recorded_sleep)
    boundary = SnakemakeBoundary(workflow=None)
    try:
        assert boundary.shorten_group_level_pause(0.004) == 0.004
        asyncio.run(snakemake.jobs.asyncio.sleep(0.1))  # the call in GroupJob.postprocess
        assert snakemake.jobs.asyncio.TaskGroup is asyncio.TaskGroup  # the rest unchanged
    finally:
        assert boundary.shorten_group_level_pause(None) is None
    assert snakemake.jobs.asyncio is asyncio
    asyncio.run(snakemake.jobs.asyncio.sleep(0.1))
    assert delays == [0.004, 0.1]


def test_a_changed_group_postprocess_keeps_snakemakes_pause(monkeypatch):
    import asyncio

    import snakemake.jobs

    async def postprocess(self, error=False, **kwargs):  # no level pause any more
        pass

    monkeypatch.setattr(snakemake.jobs.GroupJob, "postprocess", postprocess)
    capabilities = probe()
    assert not capabilities.group_level_pause
    assert capabilities.problems == ()  # nothing falls back: Snakemake's pause stays
    boundary = SnakemakeBoundary(workflow=None, capabilities=capabilities)
    assert boundary.shorten_group_level_pause(0.004) is None
    assert snakemake.jobs.asyncio is asyncio


def test_a_changed_internal_switches_the_direct_path_off(monkeypatch):
    import snakemake.executors.local as local

    monkeypatch.setattr(local, "run_wrapper", lambda job_rule, input, output: None)
    capabilities = probe()
    assert not capabilities.direct
    assert not capabilities.group_capture
    assert any("run_wrapper" in problem for problem in capabilities.problems)


def test_one_warning_names_the_snakemake_version(caplog):
    capabilities = Capabilities(problems=("snakemake.thing",))
    with caplog.at_level(logging.WARNING):
        boundary = SnakemakeBoundary(workflow=None, capabilities=capabilities)
    (record,) = [r for r in caplog.records if "differs" in r.getMessage()]
    assert boundary.version in record.getMessage()
    assert "snakemake.thing" in record.getMessage()
    assert "per-job command" in record.getMessage()
    with pytest.raises(snakemake_boundary.NotDirect):
        boundary.capture_command(record=None)


class FakeMember:
    def __init__(self, name, input=(), output=(), pipe_group=None, service=False):
        self.name, self.input, self.output = name, list(input), list(output)
        self.pipe_group, self.is_service = pipe_group, service
        self.is_pipe = pipe_group is not None and not service

    def __repr__(self):
        return self.name


class FakeGroup:
    def __init__(self, *levels):
        self.toposorted = [list(level) for level in levels]


def group_record(*levels):
    """The record of a group of ``levels`` of members (as the boundary reads it)."""
    members = tuple(JobRecord(m, m.name, m.name, 1) for level in levels for m in level)
    return JobRecord(FakeGroup(*levels), "g", "group g", 1, {}, "g", members=members)


def names(order):
    """The rules of each run set's member records."""
    return [[member.rule for member in run_set.jobs] for run_set in order]


def test_run_order_keeps_snakemakes_order_without_pipes():
    a, b = FakeMember("a", output=["a"]), FakeMember("b", input=["a"], output=["b"])
    c = FakeMember("c", output=["c"])
    boundary = SnakemakeBoundary(workflow=None)
    order = boundary.run_order(group_record([a, c], [b]))
    assert names(order) == [["a"], ["c"], ["b"]]
    assert [run_set.after for run_set in order] == [(), (), (0,)]


def test_a_pipe_group_starts_after_everything_its_members_read():
    # x is at the producer's level, but the consumer reads it: the pipe group
    # (producer and consumer together) must wait for x
    pipe = object()
    producer = FakeMember("producer", output=["p.pipe"], pipe_group=pipe)
    x = FakeMember("x", output=["x"])
    consumer = FakeMember("consumer", input=["p.pipe", "x"], output=["c"], pipe_group=pipe)
    after = FakeMember("after", input=["c"], output=["d"])
    boundary = SnakemakeBoundary(workflow=None)
    order = boundary.run_order(group_record([producer, x], [consumer], [after]))
    assert names(order) == [["x"], ["producer", "consumer"], ["after"]]
    assert [run_set.after for run_set in order] == [(), (0,), (1,)]


def test_without_pipe_groups_a_group_with_pipes_is_not_direct():
    pipe = object()
    producer = FakeMember("producer", output=["p.pipe"], pipe_group=pipe)
    consumer = FakeMember("consumer", input=["p.pipe"], pipe_group=pipe)
    capabilities = Capabilities(direct=True, job_facts=True)
    boundary = SnakemakeBoundary(workflow=None, capabilities=capabilities)
    with pytest.raises(snakemake_boundary.NotDirect, match="pipe groups"):
        boundary.run_order(group_record([producer], [consumer]))


def test_every_patch_is_undone(monkeypatch):
    import asyncio

    import snakemake.jobs

    from snakemake_executor_plugin_matensemble.snakemake_boundary import patches

    resources = {"_cores": None, "mem_mb": 10}
    patches.limit_cores(resources, 4)
    patches.limit_cores(resources, 2)  # the first value is the one given back
    patches.install_capture()
    patches.set_level_pause(0.004)
    assert resources["_cores"] == 2
    assert patches.shell_module().sp is not subprocess
    assert snakemake.jobs.asyncio is not asyncio
    patches.undo_all()
    assert resources == {"_cores": None, "mem_mb": 10}
    assert patches.shell_module().sp is subprocess
    assert snakemake.jobs.asyncio is asyncio


def test_a_groups_wait_is_changed_only_while_it_is_prepared():
    import snakemake.jobs

    from snakemake_executor_plugin_matensemble.snakemake_boundary import patches

    original = snakemake.jobs.wait_for_files
    with patches.waiting_only_for_outside({"made/here.txt"}):
        assert snakemake.jobs.wait_for_files is not original
    assert snakemake.jobs.wait_for_files is original
