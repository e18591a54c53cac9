"""Flux's alloc-bypass: the packer's placement as the job's R (backends/flux/bypass.py),
when it is used and when the normal, scheduled path is taken instead."""

import errno
import os
from types import SimpleNamespace

import pytest

from snakemake_executor_plugin_matensemble.backends.flux import FluxBackend, FluxOptions
from snakemake_executor_plugin_matensemble.backends.flux.bypass import (
    BYPASS_ATTRIBUTE,
    KILL_GRACE_S,
    START_GRACE_S,
    bypass_R,
    enable_bypass,
)
from snakemake_executor_plugin_matensemble.packing.nodes import NodeShare, Placement

from . import flux_fakes
from .flux_fakes import FakeExecutor, fake_flux, on, spec

HOSTS = {0: "node0", 3: "node3", 4: "node4"}


def test_R_is_exactly_the_placement_ranks_cores_and_gpus():
    placement = Placement(
        (NodeShare(4, 8, tuple(range(7, 14)), ("1", "2")), NodeShare(3, 8, (0, 1, 5), ("0",)))
    )
    R = bypass_R(placement, HOSTS, now=1000.0, walltime_s=60, instance_end=None)
    assert R["version"] == 1
    execution = R["execution"]
    assert execution["R_lite"] == [
        {"rank": "3", "children": {"core": "0-1,5", "gpu": "0"}},
        {"rank": "4", "children": {"core": "7-13", "gpu": "1-2"}},
    ]
    assert execution["nodelist"] == ["node3", "node4"]  # in the order of the ranks
    assert execution["starttime"] == 1000.0
    assert execution["expiration"] == 1000.0 + 60 + START_GRACE_S


def test_R_ends_with_the_walltime_but_never_after_the_instance():
    placement = on(0, cores=2)
    assert (
        "gpu"
        not in bypass_R(placement, HOSTS, 1000.0, None, None)["execution"]["R_lite"][0]["children"]
    )
    ends = {
        (walltime, end): bypass_R(placement, HOSTS, 1000.0, walltime, end)["execution"][
            "expiration"
        ]
        for walltime, end in ((None, None), (None, 5000.0), (60, 5000.0), (6000, 5000.0))
    }
    assert ends == {
        (None, None): 0.0,  # no limit at all
        (None, 5000.0): 5000.0,
        (60, 5000.0): 1000.0 + 60 + START_GRACE_S,
        (6000, 5000.0): 5000.0,  # the job still ends inside the allocation
    }


class Handle:
    """A Flux handle answering the owner attribute and jobtap RPCs as flux-core
    0.88 does: a loaded alloc-bypass is listed as ``alloc-bypass.so``, and
    loading it again fails with EEXIST."""

    def __init__(self, owner=None, loaded=(), load_error=None):
        self.owner = os.getuid() if owner is None else owner
        self.loaded = list(loaded)
        self.load_error = load_error
        self.requests = []

    def get_rank(self):
        return 0

    def attr_get(self, name):
        assert name == "security.owner"
        return str(self.owner)

    def rpc(self, topic, payload):
        self.requests.append((topic, payload))
        if "load" in payload:
            if self.load_error:
                raise self.load_error
            if "alloc-bypass.so" in self.loaded:
                raise OSError(errno.EEXIST, "alloc-bypass.so already loaded")
            self.loaded.append("alloc-bypass.so")
            return SimpleNamespace(get=lambda: {})
        return SimpleNamespace(get=lambda: {"plugins": list(self.loaded)})


def test_bypass_loads_the_jobtap_plugin_in_an_instance_of_this_user():
    handle = Handle()
    assert enable_bypass(handle) is None
    assert ("job-manager.jobtap", {"load": "alloc-bypass.so"}) in handle.requests
    again = Handle(loaded=["alloc-bypass"])
    assert enable_bypass(again) is None
    assert [payload for _, payload in again.requests] == [{"query_only": True}]  # not reloaded


def test_a_later_run_in_the_same_instance_bypasses_too():
    # the first run loaded it; flux-core lists it by its file name
    handle = Handle()
    assert enable_bypass(handle) is None
    assert handle.loaded[-1] == "alloc-bypass.so"
    assert enable_bypass(handle) is None  # the second run: found loaded, not refused
    assert [payload for _, payload in handle.requests].count({"load": "alloc-bypass.so"}) == 1


def test_a_plugin_loaded_meanwhile_by_another_run_is_no_refusal():
    handle = Handle(load_error=OSError(errno.EEXIST, "alloc-bypass.so already loaded"))
    assert enable_bypass(handle) is None


@pytest.mark.parametrize(
    ("handle", "words"),
    [
        (Handle(owner=os.getuid() + 1), "belongs to uid"),
        (Handle(load_error=OSError(2, "No such file or directory")), "could not be loaded"),
    ],
)
def test_bypass_is_refused_in_another_users_instance_or_without_the_plugin(handle, words):
    assert words in enable_bypass(handle)


@pytest.fixture
def backend_with(tmp_path, monkeypatch):
    monkeypatch.setattr(flux_fakes, "LOG_DIR", str(tmp_path / "logs"))
    made = []

    def make(handle, **options):
        FakeExecutor.created = 0
        flux = fake_flux([])
        flux.Flux = lambda: handle
        backend = FluxBackend(FluxOptions(cancel_timeout=1, **options), "run-1", flux)
        backend.enclosing.choose_bypass({0: "node0", 1: "node1"}, None)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend._wake.close()


def test_a_bypassed_job_carries_its_R_and_no_rank_constraint(backend_with):
    backend = backend_with(Handle())
    assert backend.enclosing.bypass
    backend.launch(spec(key=1, walltime_s=30), on(1, cores=3))
    (future,) = backend.executor.submitted
    R = future.jobspec.attrs[BYPASS_ATTRIBUTE]
    assert R["execution"]["R_lite"] == [{"rank": "1", "children": {"core": "0-2"}}]
    assert R["execution"]["nodelist"] == ["node1"]
    assert "system.constraints" not in future.jobspec.attrs


@pytest.mark.parametrize(
    ("handle", "options"),
    [
        (Handle(owner=os.getuid() + 1), {}),
        (Handle(load_error=OSError(2, "No such file or directory")), {}),
        (Handle(), {"alloc_bypass": False}),
    ],
    ids=["another-users-instance", "plugin-not-loadable", "turned-off"],
)
def test_without_bypass_the_scheduler_matches_the_job_pinned_to_its_ranks(
    backend_with, handle, options
):
    backend = backend_with(handle, **options)
    assert not backend.enclosing.bypass
    assert backend.supports_lookahead
    backend.launch(spec(key=1, walltime_s=30), on(1, cores=3))
    (future,) = backend.executor.submitted
    assert BYPASS_ATTRIBUTE not in future.jobspec.attrs
    assert future.jobspec.attrs["system.constraints"] == {"ranks": ["1"]}


def test_a_successor_submitted_ahead_ends_its_walltime_after_its_predecessors_latest_end(
    backend_with,
):
    backend = backend_with(Handle())
    assert backend.supports_lookahead
    backend.launch(spec(key=1, walltime_s=30), on(1, cores=2))
    backend.launch(spec(key=2, walltime_s=600), on(1, cores=2), after=1)  # deferred: no id yet
    (first,) = backend.executor.submitted
    first.assign(4242)
    first_R, second = first.jobspec.attrs[BYPASS_ATTRIBUTE], backend.executor.submitted[1]
    second_R = second.jobspec.attrs[BYPASS_ATTRIBUTE]
    assert second.jobspec.attrs["system.dependencies"] == [{"scheme": "afterany", "value": "4242"}]
    assert second_R["execution"]["R_lite"] == first_R["execution"]["R_lite"]
    latest_start = first_R["execution"]["expiration"] + KILL_GRACE_S
    assert second_R["execution"]["expiration"] == latest_start + 600 + START_GRACE_S


def test_a_chain_submitted_ahead_past_the_instances_end_starts_now_and_ends_with_the_instance():
    """Look-ahead successors several levels deep: the latest start of each adds
    up past the instance's end; their R must still start now and end at the
    instance's end (a starttime after the expiration timed the job out at once)."""
    placement = Placement((NodeShare(0, 1, (1,)),))
    R = bypass_R(placement, HOSTS, 1000.0, 60, instance_end=1200.0, latest_start=1300.0)
    execution = R["execution"]
    assert execution["starttime"] == 1000.0
    assert execution["expiration"] == 1200.0
    assert execution["starttime"] < execution["expiration"]
    deep = bypass_R(placement, HOSTS, 1000.0, 60, instance_end=None, latest_start=1100.0)
    assert deep["execution"]["expiration"] == 1100.0 + 60 + START_GRACE_S
