"""The Flux backend at its seam, with a small fake of the flux-python API.

What users rely on is covered against real Flux in tests/flux/test_flux.py; these tests
pin down the jobspec mapping and outcome handling precisely and run anywhere.
"""

import concurrent.futures
import errno
import os
from types import SimpleNamespace

import pytest

from snakemake_executor_plugin_matensemble.allocation import NodeShare, NodeSpec, Placement
from snakemake_executor_plugin_matensemble.backends import JobFinished, LaunchSpec, Status
from snakemake_executor_plugin_matensemble.backends.flux import (
    FluxBackend,
    FluxOptions,
    nodes_from_rset,
    parse_shell_options,
    reserve_own_cores,
)
from snakemake_executor_plugin_matensemble.request import ResourceRequest


class FakeJobspec:
    def __init__(self, kind, **kwargs):
        self.kind = kind
        self.args = kwargs
        self.attrs = {}
        self.shell_options = {}
        self.duration = self.cwd = self.environment = self.stdout = None

    @classmethod
    def from_command(cls, command, **kwargs):
        return cls("command", command=command, **kwargs)

    @classmethod
    def from_nest_command(cls, command, **kwargs):
        return cls("nest", command=command, **kwargs)

    def setattr(self, key, value):
        self.attrs[key] = value

    def setattr_shell_option(self, key, value):
        self.shell_options[key] = value


class FakeJobException(Exception):
    def __init__(self, kind, note=""):
        self.type, self.note, self.severity = kind, note, 0
        super().__init__(f"{kind}: {note}")


class FakeFuture(concurrent.futures.Future):
    def __init__(self, jobspec):
        super().__init__()
        self.jobspec = jobspec
        self._jobid = None
        self._jobid_callbacks = []
        self._event_callbacks = {}

    def jobid(self, timeout=None):
        return self._jobid

    def add_jobid_callback(self, callback):
        self._jobid_callbacks.append(callback)

    def add_event_callback(self, event, callback):
        self._event_callbacks.setdefault(event, []).append(callback)

    # test helpers, as the executor thread would do them
    def assign(self, jobid):
        self._jobid = jobid
        for callback in self._jobid_callbacks:
            callback(self)

    def start(self):
        for callback in self._event_callbacks.get("start", []):
            callback(self, SimpleNamespace(timestamp=123.0))


class FakeExecutor:
    created = 0
    latest = None

    def __init__(self, **kwargs):
        FakeExecutor.created += 1
        FakeExecutor.latest = self
        self.submitted = []
        self.shut_down = False

    def submit(self, jobspec, **kwargs):
        future = FakeFuture(jobspec)
        future.kwargs = kwargs
        self.submitted.append(future)
        return future

    def shutdown(self, wait=True, cancel_futures=False):
        self.shut_down = True


class FakeJobID(int):
    @property
    def f58(self):
        return f"f{int(self)}"


def fake_flux(cancelled: list):
    def cancel(handle, jobid, reason):
        """Like Flux: the job gets a cancel exception and its future completes."""
        cancelled.append(jobid)
        for future in FakeExecutor.latest.submitted if FakeExecutor.latest else ():
            if future.jobid() == jobid and not future.done():
                future.set_exception(FakeJobException("cancel", reason))

    return SimpleNamespace(
        Flux=lambda: SimpleNamespace(get_rank=lambda: 0),
        job=SimpleNamespace(
            FluxExecutor=FakeExecutor,
            JobspecV1=FakeJobspec,
            JobException=FakeJobException,
            JobID=FakeJobID,
            cancel=cancel,
        ),
    )


@pytest.fixture
def backend():
    cancelled = []
    FakeExecutor.created = 0
    backend = FluxBackend(
        FluxOptions(queue="batch", bank="mat", shell_options=(("verbose", "2"),), cancel_timeout=1),
        run_id="run-1",
        flux_module=fake_flux(cancelled),
    )
    backend.cancelled = cancelled
    yield backend
    backend._wake.close()


def spec(key=1, per_task=False, **request) -> LaunchSpec:
    return LaunchSpec(
        key=key,
        command="echo hi",
        name="md[T=300]",
        cwd="/work",
        env={"A": "1"},
        log_path=f"/tmp/matensemble-unit-logs/{key}.log",
        request=ResourceRequest(**request),
        shell="/bin/bash",
        per_task=per_task,
        attributes={"jobid": "7"},
    )


def on(*ranks, cores=1):
    return Placement(tuple(NodeShare(r, 1, tuple(range(cores))) for r in ranks))


def test_single_task_job_gets_all_its_cores_and_every_attribute(backend):
    jobspec = backend.jobspec(spec(cores_per_task=4, walltime_s=600), on(2, cores=4))
    assert jobspec.kind == "command"
    assert jobspec.args == {
        "command": ["/bin/bash", "-c", "echo hi"],
        "num_tasks": 1,
        "cores_per_task": 4,
        "gpus_per_task": None,
        "num_nodes": None,
        "exclusive": False,
    }
    assert jobspec.duration == 600
    assert (jobspec.cwd, jobspec.environment) == ("/work", {"A": "1"})
    assert jobspec.stdout == "/tmp/matensemble-unit-logs/1.log"
    assert jobspec.attrs["system.job.name"] == "md[T=300]"
    assert jobspec.attrs["user.snakemake"] == {
        "run": "run-1",
        "key": 1,
        "name": "md[T=300]",
        "jobid": "7",
    }
    assert jobspec.attrs["system.constraints"] == {"ranks": ["2"]}
    assert jobspec.attrs["system.queue"] == "batch"
    assert jobspec.attrs["system.bank"] == "mat"
    assert jobspec.shell_options == {"cpu-affinity": "per-task", "verbose": 2}


def test_per_task_job_with_gpus_over_nodes(backend):
    jobspec = backend.jobspec(
        spec(per_task=True, tasks=4, cores_per_task=2, gpus_per_task=1, nodes=2), on(0, 3)
    )
    assert jobspec.kind == "command"
    assert jobspec.args["num_tasks"] == 4
    assert jobspec.args["cores_per_task"] == 2
    assert jobspec.args["gpus_per_task"] == 1
    assert jobspec.args["num_nodes"] == 2
    assert jobspec.shell_options["gpu-affinity"] == "per-task"
    assert jobspec.attrs["system.constraints"] == {"ranks": ["0,3"]}


def test_job_that_starts_its_own_ranks_gets_a_nested_instance(backend):
    jobspec = backend.jobspec(spec(tasks=2, cores_per_task=3, mpi="flux run"), on(1))
    assert jobspec.kind == "nest"
    assert jobspec.args["num_slots"] == 2
    assert jobspec.args["cores_per_slot"] == 3


def test_exclusive_job_asks_for_whole_nodes(backend):
    jobspec = backend.jobspec(spec(exclusive=True), on(1))
    assert jobspec.args["exclusive"] is True
    assert jobspec.args["num_nodes"] == 1


def test_unpinned_jobs_have_no_rank_constraint():
    backend = FluxBackend(FluxOptions(pin_ranks=False), flux_module=fake_flux([]))
    assert "system.constraints" not in backend.jobspec(spec(), on(0)).attrs


def test_urgency_follows_priority_unless_set(backend):
    assert backend.urgency(spec()) == 16
    assert backend.urgency(LaunchSpec(**{**spec().__dict__, "priority": 5})) == 21
    assert backend.urgency(LaunchSpec(**{**spec().__dict__, "priority": 100})) == 31
    fixed = FluxBackend(FluxOptions(urgency=3), flux_module=fake_flux([]))
    assert fixed.urgency(LaunchSpec(**{**spec().__dict__, "priority": 5})) == 3


def run_one(backend, finish) -> list:
    backend.launch(spec(key=5, walltime_s=120), on(0))
    (future,) = backend.executor.submitted
    future.assign(4242)
    future.start()
    finish(future)
    return backend.wait(1.0) + backend.wait(0.1)


def test_outcomes_are_pushed_as_events(backend):
    events = run_one(backend, lambda f: f.set_result(0))
    started, finished = events
    assert (started.key, started.backend_id, started.time) == (5, "f4242", 123.0)
    assert finished.status is Status.SUCCESS
    assert backend.running_count == 0


@pytest.mark.parametrize(
    ("finish", "status", "words"),
    [
        (lambda f: f.set_result(3), Status.FAILED, "(Flux job f4242) exited with code 3"),
        (lambda f: f.set_result(-9), Status.FAILED, "killed by signal 9"),
        (
            lambda f: f.set_exception(FakeJobException("timeout", "resource allocation expired")),
            Status.TIMEOUT,
            "exceeded its runtime of 2 min (Flux job f4242: resource allocation expired)",
        ),
        (
            lambda f: f.set_exception(FakeJobException("cancel", "cancelled by user")),
            Status.CANCELLED,
            "was cancelled",
        ),
        (
            lambda f: f.set_exception(FakeJobException("cancel")),
            Status.FAILED,
            "is the instance shutting down?",
        ),
        (
            lambda f: f.set_exception(OSError(errno.ENOSYS, "Function not implemented")),
            Status.FAILED,
            "was lost with the Flux instance",
        ),
        (
            lambda f: f.set_exception(FakeJobException("exec", "task 0: start failed")),
            Status.FAILED,
            "could not be started by Flux",
        ),
        (
            lambda f: f.set_exception(FakeJobException("node-failure", "lost rank 3")),
            Status.FAILED,
            "type=node-failure: lost rank 3",
        ),
        (lambda f: f.set_exception(OSError("invalid jobspec")), Status.LAUNCH_ERROR, "rejected"),
    ],
)
def test_every_outcome_is_reported_never_raised(backend, finish, status, words):
    finished = [e for e in run_one(backend, finish) if isinstance(e, JobFinished)]
    assert finished[0].status is status
    assert words in finished[0].reason


def test_cancel_all_cancels_every_flux_job(backend):
    for key in (1, 2, 3):
        backend.launch(spec(key=key), on(0))
    first, second, third = backend.executor.submitted
    first.assign(11)
    second.assign(12)  # third has not reached Flux yet
    results = backend.cancel_all()
    assert sorted(backend.cancelled) == [11, 12]
    assert third.cancelled()
    assert sorted(r.key for r in results) == [1, 2, 3]
    assert all(r.status is Status.CANCELLED for r in results)
    # a Flux id that arrives after the cancel is cancelled at once
    backend._on_jobid(9, SimpleNamespace(jobid=lambda: 99))
    assert 99 in backend.cancelled


def test_one_executor_for_all_jobs(backend):
    for key in range(1, 30):
        backend.launch(spec(key=key), on(0))
    assert FakeExecutor.created == 1
    assert len(backend.executor.submitted) == 29


def test_resources_per_rank_from_r_lite():
    rset = {
        "execution": {
            "R_lite": [
                {"rank": "0-1", "children": {"core": "0-3", "gpu": "0-1"}},
                {"rank": "2", "children": {"core": "0-7"}},
            ],
            "nodelist": ["node[10-12]"],
        }
    }
    nodes = nodes_from_rset(rset, lambda entry: ["node10", "node11", "node12"])
    assert nodes == [
        NodeSpec(0, "node10", (0, 1, 2, 3), ("0", "1")),
        NodeSpec(1, "node11", (0, 1, 2, 3), ("0", "1")),
        NodeSpec(2, "node12", tuple(range(8)), ()),
    ]


def test_reserving_own_cores_never_takes_the_whole_rank():
    nodes = [NodeSpec(0, "a", (0, 1, 2, 3)), NodeSpec(1, "b", (0, 1))]
    assert [len(n.cores) for n in reserve_own_cores(nodes, 0, 1)] == [3, 2]
    assert [len(n.cores) for n in reserve_own_cores(nodes, 1, 5)] == [4, 1]
    assert [len(n.cores) for n in reserve_own_cores(nodes, 0, 0)] == [4, 2]


def test_shell_options_parse():
    assert parse_shell_options("verbose=2, signal=SIGUSR1@60,nosetpgrp") == (
        ("verbose", "2"),
        ("signal", "SIGUSR1@60"),
        ("nosetpgrp", "1"),
    )
    assert parse_shell_options(None) == ()


def test_log_directory_is_created(backend, tmp_path):
    log_spec = LaunchSpec(**{**spec().__dict__, "log_path": str(tmp_path / "a/b/c.log")})
    backend.launch(log_spec, on(0))
    assert os.path.isdir(tmp_path / "a/b")
