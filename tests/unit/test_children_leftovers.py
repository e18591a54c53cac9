"""Child instances that dead runs left in the enclosing instance are cancelled
and waited for before a new run starts anything (a fake flux-python;
tests/flux/test_children_crash.py does it against real Flux)."""

from __future__ import annotations

import os
import threading
from dataclasses import replace
from types import SimpleNamespace

import pytest

from snakemake_executor_plugin_matensemble.backends import JobFinished, JobStarted
from snakemake_executor_plugin_matensemble.backends.flux.children.leftovers import (
    end_leftover_children,
)
from snakemake_executor_plugin_matensemble.backends.flux.children.watch import ChildLoss
from snakemake_executor_plugin_matensemble.backends.flux.leftovers import owner_identity
from snakemake_executor_plugin_matensemble.errors import BackendUnavailableError

from ..helpers import wait_until
from .flux_fakes import FakeJobException, on, spec
from .test_children_wire import backend, logs_in_tmp_path  # noqa: F401 (fixtures)
from .test_flux_adoption import DEAD, FakeInstance, JobID, ours


def child(jobid, state, owner=DEAD, name="c0", cwd=None):
    """A child job as launch.child_jobspec writes it: the owner and the child's name."""
    job = {"id": jobid, "state": state, "attrs": {"user": {"snakemake": {**owner, "child": name}}}}
    if cwd is not None:
        job["cwd"] = cwd
    return job


@pytest.fixture
def settle(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def run(jobs, ends_after=1, timeout=1.0):
        instance = FakeInstance(jobs, ends_after)
        cancelled: list[int] = []

        def cancel(handle, jobid, reason):
            cancelled.append(int(jobid))
            instance.cancel(handle, jobid, reason)

        flux = SimpleNamespace(
            job=SimpleNamespace(
                JobID=JobID,
                JobList=instance.job_list,
                JobKVSLookup=instance.lookup,
                cancel=cancel,
            )
        )
        ended = end_leftover_children(flux, None, os.getcwd(), "new-run", timeout)
        return instance, cancelled, ended

    return run


def test_children_of_a_dead_run_are_cancelled_and_waited_for(settle, caplog):
    caplog.set_level("INFO")
    instance, cancelled, ended = settle(
        [child(1, "RUN"), child(2, "SCHED", name="c1"), child(3, "CLEANUP", name="c2")]
    )
    assert sorted(cancelled) == [1, 2], "a child already ending is only waited for"
    assert [c.name for c in ended] == ["c0", "c1", "c2"]
    assert instance.jobs == {}, "every one has ended before the new run goes on"
    lines = [r.getMessage() for r in caplog.records]
    assert sum("of the earlier run dead-run" in line for line in lines) == 3, lines
    assert any("3 child Flux instance(s) of earlier runs ended" in line for line in lines)


def test_living_own_foreign_and_non_child_jobs_are_never_touched(settle):
    living = owner_identity("living-run")
    jobs = [
        child(1, "RUN", owner=living),  # its snakemake still runs
        child(2, "RUN", owner={**DEAD, "run": "new-run"}),  # this run's own
        child(3, "RUN", cwd="/another/workflow"),  # another workdir
        ours(4, "RUN"),  # a job (not a child) of the dead run: adoption's business
        {"id": 5, "state": "RUN", "attrs": {}},  # not the plugin's
    ]
    instance, cancelled, ended = settle(jobs)
    assert cancelled == []
    assert ended == []
    assert sorted(instance.jobs) == [1, 2, 3, 4, 5]
    assert instance.lookups == [[1, 2, 4, 5]], "only jobs in this workdir are looked up"


def test_nothing_left_costs_one_query_and_no_lookup(settle):
    instance, cancelled, ended = settle([])
    assert (instance.lists, instance.lookups, cancelled, ended) == (1, [], [], [])


def test_a_child_that_does_not_end_stops_the_run_before_anything_starts(settle):
    with pytest.raises(BackendUnavailableError, match=r"c0 \(job f1\).*did not end within 0.3 s"):
        settle([child(1, "RUN")], ends_after=None, timeout=0.3)


# -- a lost child is ended before its jobs are reported ----------------------------


def test_a_lost_childs_jobs_are_reported_only_once_its_job_is_inactive(backend):  # noqa: F811
    """Its keepers give the child's jobs a grace to stop: until Flux says the
    child's job is inactive, none of its jobs is reported (a retry would run
    beside it), neither the ones the loss fails nor a failure already queued."""
    flux = backend.flux
    backend.options = replace(backend.options, cancel_timeout=30)  # no timing in the test
    gone = threading.Event()

    def get_job(handle, jobid):  # the child's job ends only when the test says so
        return {"state": "INACTIVE" if gone.is_set() else "RUN"}

    flux.job.get_job = get_job
    backend.launch(spec(key=1), on(4))
    backend.launch(spec(key=2), on(5))
    first, second = backend.instances["c1"].executor.submitted
    first.assign(21)
    first.start()
    second.assign(22)
    second.start()
    assert {e.key for e in backend.wait(0.1) if isinstance(e, JobStarted)} == {1, 2}
    first.set_exception(FakeJobException("cancel", "its broker shut down"))  # queued first
    loss = ChildLoss("c1", 77, (4, 5), "its brokers exited with status 1")
    loser = threading.Thread(target=backend._on_child_lost, args=(loss,))
    loser.start()
    assert wait_until(lambda: 77 in backend.cancelled, 5), "the lost child's job was cancelled"
    seen: list[list] = []
    waiter = threading.Thread(target=lambda: seen.append(backend.wait(0.1)))
    waiter.start()
    waiter.join(0.5)
    assert waiter.is_alive(), "a lost child's job was reported while the child still ran"
    gone.set()
    loser.join(5)
    waiter.join(5)
    events = seen[0] + backend.wait(0.1)
    assert sorted(e.key for e in events if isinstance(e, JobFinished)) == [1, 2]
