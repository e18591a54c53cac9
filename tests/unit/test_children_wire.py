"""Child instances wired into the Flux backend, at the Flux seam (fake flux-python):
the setting and the ``auto`` rule, routing by placement with the ranks rewritten,
a job over two children in the enclosing instance, ``JobStarted.instance``, and
a lost child (its ranks down, each of its jobs failed once). Real Flux runs are in
tests/flux/test_children_run.py.
"""

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from snakemake_executor_plugin_matensemble.backends import JobFinished, JobStarted, JobStatus
from snakemake_executor_plugin_matensemble.backends.base import ResourceEvent
from snakemake_executor_plugin_matensemble.backends.flux import FluxBackend, FluxOptions
from snakemake_executor_plugin_matensemble.backends.flux.children import ChildInstance, ChildSet
from snakemake_executor_plugin_matensemble.backends.flux.children.auto import (
    AUTO_MIN_NODES,
    AUTO_NODES_PER_CHILD,
    choose_children,
    parse_children,
)
from snakemake_executor_plugin_matensemble.backends.flux.children.routing import (
    ChildRoutes,
    local_placement,
)
from snakemake_executor_plugin_matensemble.backends.flux.children.watch import ChildLoss
from snakemake_executor_plugin_matensemble.errors import SettingsError
from snakemake_executor_plugin_matensemble.settings import ExecutorSettings

from . import flux_fakes
from .flux_fakes import FakeJobException, fake_flux, on, spec


@pytest.fixture(autouse=True)
def logs_in_tmp_path(tmp_path, monkeypatch):
    monkeypatch.setattr(flux_fakes, "LOG_DIR", str(tmp_path / "logs"))


# -- the setting and the auto rule ---------------------------------------------------
@pytest.mark.parametrize("value", ["0", "-2", "many", "2.5", ""])
def test_a_bad_children_setting_names_the_flag_and_the_fix(value):
    with pytest.raises(SettingsError) as caught:
        ExecutorSettings(flux_children=value).check()
    message = str(caught.value)
    assert "--matensemble-flux-children" in message
    assert "Fix:" in message


@pytest.mark.parametrize(("value", "parsed"), [("auto", "auto"), ("OFF", "off"), ("3", 3), (2, 2)])
def test_good_children_settings_parse(value, parsed):
    ExecutorSettings(flux_children=str(value)).check()
    assert parse_children(value) == parsed


def big(**overrides):
    facts = dict(nodes=AUTO_MIN_NODES, brokers=AUTO_MIN_NODES, bypass=True)
    facts.update(overrides)
    facts.setdefault("highest_rank", facts["nodes"] - 1)
    return facts


def test_auto_starts_children_only_at_and_above_the_minimum_size():
    assert choose_children("auto", **big()).count == max(2, AUTO_MIN_NODES // AUTO_NODES_PER_CHILD)
    below = choose_children("auto", **big(nodes=AUTO_MIN_NODES - 1, brokers=AUTO_MIN_NODES - 1))
    assert below.count == 0
    assert f"below the {AUTO_MIN_NODES} nodes" in below.reason


def test_the_settings_help_gives_autos_sizes_as_the_code_has_them():
    (field,) = [f for f in dataclasses.fields(ExecutorSettings) if f.name == "flux_children"]
    help_text = " ".join(field.metadata["help"].split())
    assert f"at least {AUTO_MIN_NODES:,} nodes, {AUTO_NODES_PER_CHILD:,} per child" in help_text
    # Frontier (9,408 nodes) gets 4 children
    assert choose_children("auto", **big(nodes=9408, brokers=9408)).count == 4


@pytest.mark.parametrize(
    ("facts", "words"),
    [
        (dict(brokers=1), "broker(s) for"),  # fake nodes of a one-broker instance
        (dict(bypass=False), "alloc-bypass is off"),
    ],
)
def test_auto_says_why_not_and_a_count_is_refused_where_children_cannot_work(facts, words):
    choice = choose_children("auto", **big(**facts))
    assert choice.count == 0
    assert words in choice.reason
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        choose_children(2, **big(**facts))


def test_off_is_off_and_a_count_needs_a_node_per_child():
    assert choose_children("off", **big()).count == 0
    assert choose_children(4, nodes=4, brokers=4, highest_rank=3, bypass=True).count == 4
    with pytest.raises(ValueError, match="give at most 4"):
        choose_children(5, nodes=4, brokers=4, highest_rank=3, bypass=True)


# -- routing -------------------------------------------------------------------------
C0 = ChildInstance("c0", None, (0, 1), "ssh://matensemble-rank-0/tmp/c0")
C1 = ChildInstance("c1", None, (4, 5), "ssh://matensemble-rank-4/tmp/c1")


def test_a_placement_goes_to_the_child_owning_all_its_ranks():
    routes = ChildRoutes([C0, C1])
    assert routes.child_for(on(5)) is C1
    assert routes.child_for(on(0, 1)) is C0
    assert routes.child_for(on(1, 4)) is None  # over two children: the enclosing instance
    assert routes.child_for(on(2)) is None  # no child has it
    assert local_placement(on(4, 5, cores=2), C1) == on(0, 1, cores=2)


class FakeChild(ChildInstance):
    def open(self):
        return SimpleNamespace(name=self.name)


@pytest.fixture
def backend(monkeypatch):
    cancelled = []
    flux = fake_flux(cancelled)
    rset = {"execution": {"R_lite": [], "expiration": 0}}
    flux.kvs = SimpleNamespace(get=lambda handle, key: json.dumps(rset))
    #: the state of each child's job in the enclosing instance
    flux.child_states = {77: "RUN"}
    flux.job.get_job = lambda handle, jobid: {"state": flux.child_states[jobid]}
    cancel_job = flux.job.cancel

    def cancel(handle, jobid, reason):  # a cancelled child's job ends at once
        if jobid in flux.child_states:
            flux.child_states[jobid] = "INACTIVE"
        cancel_job(handle, jobid, reason)

    flux.job.cancel = cancel
    monkeypatch.setattr(ChildSet, "watch", lambda self, on_lost: None)  # no watcher thread
    backend = FluxBackend(
        FluxOptions(alloc_bypass=False, cancel_timeout=1), run_id="run-1", flux_module=flux
    )
    backend.cancelled = cancelled
    children = [FakeChild("c0", None, C0.ranks, C0.uri), FakeChild("c1", 77, C1.ranks, C1.uri)]
    backend.use_children(ChildSet("local:///tmp/parent", children, Path("carrier")))
    yield backend
    backend._wake.close()


def test_jobs_run_in_their_child_with_its_own_ranks_and_a_spanning_job_in_the_enclosing(
    backend,
):
    backend.launch(spec(key=1), on(4))
    backend.launch(spec(key=2), on(1, 4))
    backend.launch(spec(key=3), on(0, 1))
    c0, c1 = backend.instances["c0"], backend.instances["c1"]
    (in_c1,) = c1.executor.submitted
    (spanning,) = backend.enclosing.executor.submitted
    (in_c0,) = c0.executor.submitted
    assert in_c1.jobspec.attrs["system.constraints"] == {"ranks": ["0"]}
    assert in_c0.jobspec.attrs["system.constraints"] == {"ranks": ["0,1"]}
    assert spanning.jobspec.attrs["system.constraints"] == {"ranks": ["1,4"]}
    assert c1.uri == C1.uri


def test_a_start_names_the_child_it_runs_in(backend):
    backend.launch(spec(key=1), on(5))
    backend.launch(spec(key=2), on(1, 4))
    for future, jobid in zip(
        [*backend.instances["c1"].executor.submitted, *backend.enclosing.executor.submitted],
        (11, 12),
        strict=True,
    ):
        future.assign(jobid)
        future.start()
    started = {e.key: e.instance for e in backend.wait(0.1) if isinstance(e, JobStarted)}
    assert started == {1: "c1", 2: ""}


def test_a_lost_child_takes_its_ranks_out_and_fails_each_of_its_jobs_once(backend):
    backend.launch(spec(key=1), on(4))
    backend.launch(spec(key=2), on(5))
    backend.launch(spec(key=3), on(0))
    first, second = backend.instances["c1"].executor.submitted
    first.assign(21)
    first.start()
    second.assign(22)
    second.start()
    backend._on_child_lost(ChildLoss("c1", 7, (4, 5), "its brokers exited with status 1"))
    backend._on_child_lost(ChildLoss("c1", 7, (4, 5), "reported twice"))
    first.set_exception(FakeJobException("node-failure", "node failure on vm (rank 0)"))
    events = backend.wait(0.1) + backend.wait(0.1)
    down = [e for e in events if isinstance(e, ResourceEvent)]
    finished = [e for e in events if isinstance(e, JobFinished)]
    assert [(e.kind.value, e.ranks) for e in down] == [("down", (4, 5))]
    assert sorted(e.key for e in finished) == [1, 2]
    assert all(e.status is JobStatus.FAILED for e in finished)
    assert all("child Flux instance c1" in e.reason and "status 1" in e.reason for e in finished)
    assert backend.running_count == 1  # the job in c0 runs on


def test_a_lost_childs_jobs_not_started_are_placed_again_not_failed(backend):
    backend.launch(spec(key=1), on(4))
    backend.launch(spec(key=2), on(5))
    first, second = backend.instances["c1"].executor.submitted
    first.assign(21)
    first.start()
    second.assign(22)  # in Flux, not started
    backend._on_child_lost(ChildLoss("c1", 7, (4, 5), "its brokers exited with status 1"))
    events = backend.wait(0.1)
    assert [e.key for e in events if isinstance(e, JobFinished)] == [1]
    assert backend.withdraw(2)  # the dispatcher takes it back (ranks down) without Flux
    assert not backend.withdraw(1)
    second.set_exception(FakeJobException("cancel", "lost"))
    assert [e for e in backend.wait(0.1) if isinstance(e, JobFinished)] == []
    assert backend.cancelled == [77]  # the lost child's job ended; nothing sent to the child


def test_a_node_failure_in_a_child_loses_the_whole_child_in_enclosing_ranks(backend):
    backend.launch(spec(key=1), on(4))
    backend.launch(spec(key=2), on(5))
    first, second = backend.instances["c1"].executor.submitted
    second.assign(22)
    second.start()
    first.assign(21)
    first.set_exception(FakeJobException("node-failure", "node failure on vm (rank 1)"))
    events = backend.wait(0.1) + backend.wait(0.1)
    finished = {e.key: e for e in events if isinstance(e, JobFinished)}
    assert finished[1].lost_ranks == (4, 5)
    assert "child Flux instance c1" in finished[2].reason
    assert "ranks 5 failed" in finished[2].reason
    assert [e.ranks for e in events if isinstance(e, ResourceEvent)] == [(4, 5)]


def relay_dies_under_a_job(backend):
    """A job runs in c1; its relay dies: the executor breaks, the future fails."""
    backend.launch(spec(key=1), on(4))
    child = backend.instances["c1"]
    (future,) = child.executor.submitted
    future.assign(4242)
    future.start()
    broken = child.executor
    broken._broken_event.set()
    future.set_exception(RuntimeError("reactor start failed"))
    return child, broken


def test_after_a_relay_died_the_childs_job_is_reattached_not_rerun(backend):
    child, broken = relay_dies_under_a_job(backend)
    events = backend.wait(0.2)
    assert [type(e).__name__ for e in events] == ["JobStarted"]
    assert child.executor is not broken
    (attached,) = child.executor.submitted
    assert attached.attached == 4242  # attached by its Flux id, in the same child
    assert backend.enclosing.executor.submitted == []
    attached.assign(4242)
    attached.set_result(0)
    (finished,) = backend.wait(0.5)
    assert finished.ok


def test_a_child_whose_job_ended_is_lost_when_its_relay_dies(backend):
    child, broken = relay_dies_under_a_job(backend)
    backend.flux.child_states[77] = "INACTIVE"
    events = backend.wait(0.2) + backend.wait(0.2)
    assert child.executor is broken  # nothing re-attached to a child that is gone
    finished = [e for e in events if isinstance(e, JobFinished)]
    assert [(e.key, e.status) for e in finished] == [(1, JobStatus.FAILED)]
    assert "child Flux instance c1" in finished[0].reason
    assert "INACTIVE" in finished[0].reason
    assert [e.ranks for e in events if isinstance(e, ResourceEvent)] == [(4, 5)]
