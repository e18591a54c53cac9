"""A small fake of the flux-python API for the unit tests of the Flux backend."""

import concurrent.futures
import threading
from types import SimpleNamespace

from snakemake_executor_plugin_matensemble.backends import LaunchSpec
from snakemake_executor_plugin_matensemble.packing.nodes import NodeShare, Placement
from snakemake_executor_plugin_matensemble.packing.resource_request import ResourceRequest


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
        """The job reached Flux: from now on ``cancel()`` fails, as in flux-python."""
        self.set_running_or_notify_cancel()
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
        self._broken_event = threading.Event()

    def attach(self, jobid):
        future = FakeFuture(None)
        future.attached = jobid
        self.submitted.append(future)
        return future

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


#: Where :func:`spec` puts job logs. Only compared by the jobspec tests; tests
#: that launch (the backend creates the log's directory) set it to a directory
#: under their tmp_path (see test_flux_backend.py), so no test writes outside it.
LOG_DIR = "/tmp/matensemble-unit-logs"


def spec(key=1, per_task=False, **request) -> LaunchSpec:
    return LaunchSpec(
        key=key,
        command="echo hi",
        name="md[T=300]",
        cwd="/work",
        env={"A": "1"},
        log_path=f"{LOG_DIR}/{key}.log",
        request=ResourceRequest(**request),
        shell="/bin/bash",
        per_task=per_task,
        attributes={"jobid": "7"},
    )


def on(*ranks, cores=1):
    return Placement(tuple(NodeShare(r, 1, tuple(range(cores))) for r in ranks))
