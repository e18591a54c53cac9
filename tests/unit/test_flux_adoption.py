"""What a new run does with the Flux jobs a dead run left behind (a fake
flux-python; tests/flux/test_crash.py does it against real Flux)."""

from __future__ import annotations

import os
import signal
from types import SimpleNamespace

import pytest

from snakemake_executor_plugin_matensemble.backends.flux import FluxBackend, FluxOptions
from snakemake_executor_plugin_matensemble.backends.flux.leftovers import (
    ADOPT,
    CANCEL,
    LEAVE,
    WAIT,
    Leftover,
    decide,
    owner_identity,
    run_alive,
)
from snakemake_executor_plugin_matensemble.errors import BackendUnavailableError

from .flux_fakes import FakeExecutor, FakeJobID, fake_flux, on, spec


class JobID(FakeJobID):
    """Also parses the ``f<n>`` form the fake gives as f58."""

    def __new__(cls, value):
        if isinstance(value, str) and value.startswith("f"):
            value = value[1:]
        return super().__new__(cls, int(value))


DEAD = {"run": "dead-run", "host": "elsewhere", "pid": 1, "pid_started": 0}


class FakeInstance:
    """Active jobs of the user; a cancelled one ends after ``ends_after`` looks."""

    def __init__(self, jobs, ends_after=1):
        self.jobs = {job["id"]: job for job in jobs}
        #: jobs that are ending: how many more listings still show them
        self.cancelled: dict[int, int] = {
            job["id"]: ends_after for job in jobs if job["state"] == "CLEANUP"
        }
        self.ends_after = ends_after
        self.lists = 0
        self.lookups: list[list[int]] = []

    def job_list(self, handle, **query):
        # as flux-python leaves it after a streaming job-list RPC
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        assert query.get("filters") == ["pending", "running"]
        assert "user" not in query  # job-list's default: this user
        self.lists += 1
        for jobid in list(self.cancelled):
            self.cancelled[jobid] -= 1
            if self.cancelled[jobid] < 0:
                del self.jobs[jobid]
                del self.cancelled[jobid]
        listed = [
            SimpleNamespace(
                id=JobID(job["id"]),
                state=job["state"],
                cwd=job.get("cwd", os.getcwd()),
                ranks=[0] if job["state"] == "RUN" else [],
                ncores=1,
                t_run=100.0,
            )
            for job in self.jobs.values()
        ]
        return SimpleNamespace(jobs=lambda: listed)

    def lookup(self, handle, ids):
        self.lookups.append([int(i) for i in ids])
        return SimpleNamespace(
            data=lambda: [
                {"id": int(i), "jobspec": {"attributes": self.jobs[int(i)].get("attrs", {})}}
                for i in ids
            ]
        )

    def cancel(self, handle, jobid, reason):
        if self.ends_after is not None:
            self.cancelled[int(jobid)] = self.ends_after

    def job_list_id(self, handle, jobid):
        job = self.jobs[int(jobid)]
        info = SimpleNamespace(state=job["state"], ranks=[0], ncores=1, t_run=100.0)
        return SimpleNamespace(get_jobinfo=lambda: info)


def ours(jobid, state, owner=DEAD, **attributes):
    snakemake = {**owner, "workdir": os.getcwd(), "name": f"job{jobid}", **attributes}
    return {"id": jobid, "state": state, "attrs": {"user": {"snakemake": snakemake}}}


@pytest.fixture
def make_backend(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def make(jobs, ends_after=1, cancel_timeout=1.0):
        instance = FakeInstance(jobs, ends_after)
        flux = fake_flux([])
        flux.job.JobID = JobID
        flux.job.JobList = instance.job_list
        flux.job.JobKVSLookup = instance.lookup
        flux.job.cancel = instance.cancel
        flux.job.job_list_id = instance.job_list_id
        backend = FluxBackend(
            FluxOptions(cancel_timeout=cancel_timeout), run_id="new-run", flux_module=flux
        )
        backend.instance = instance
        return backend

    return make


def test_running_job_with_the_markers_id_is_adopted_the_rest_cancelled_and_waited_for(
    make_backend, caplog
):
    caplog.set_level("INFO")
    backend = make_backend(
        [ours(1, "RUN"), ours(2, "RUN"), ours(3, "DEPEND"), ours(4, "SCHED"), ours(5, "CLEANUP")]
    )
    backend.settle_leftovers({"f1"})
    instance = backend.instance
    assert instance.lookups == [[1, 2, 3, 4, 5]], "one pipelined lookup round"
    assert sorted(instance.jobs) == [1], "every job but the adopted one has ended"
    lines = [r.getMessage() for r in caplog.records if "of the earlier run" in r.getMessage()]
    assert len(lines) == 5
    assert sum(": adopted," in line for line in lines) == 1
    assert sum(": cancelled," in line for line in lines) == 3
    assert sum(": waited for," in line for line in lines) == 1
    # only the adopted job is re-attached
    assert backend.find_running("f2") is None
    running = backend.find_running("f1")
    assert running is not None
    assert running.backend_id == "f1"
    backend.attach(spec(key=9), running)
    assert FakeExecutor.latest.submitted[-1].attached == 1
    backend._wake.close()


def test_under_rerun_incomplete_nothing_is_adopted(make_backend):
    backend = make_backend([ours(1, "RUN"), ours(2, "RUN")])
    backend.settle_leftovers(set())  # Snakemake gives no ids under --rerun-incomplete
    assert backend.instance.jobs == {}
    assert backend.find_running("f1") is None
    backend._wake.close()


def test_nothing_left_costs_one_query_and_no_lookup(make_backend):
    backend = make_backend([])
    backend.settle_leftovers(set())
    assert (backend.instance.lists, backend.instance.lookups) == (1, [])
    backend._wake.close()


def test_jobs_of_others_and_of_a_living_run_are_never_touched(make_backend):
    living = owner_identity("living-run")
    elsewhere = ours(2, "RUN")
    elsewhere["cwd"] = "/somewhere/else"
    not_ours = {"id": 3, "state": "RUN", "attrs": {"user": {"other": 1}}}
    backend = make_backend([ours(1, "DEPEND", owner=living), elsewhere, not_ours])
    backend.settle_leftovers(set())
    assert sorted(backend.instance.jobs) == [1, 2, 3]
    assert backend.instance.lookups == [[1, 3]], "only jobs in this workdir are looked up"
    backend._wake.close()


def test_a_cancelled_job_that_does_not_end_stops_the_run_before_anything_starts(make_backend):
    backend = make_backend([ours(1, "RUN")], ends_after=None, cancel_timeout=0.3)
    with pytest.raises(BackendUnavailableError, match=r"f1 \(job1\).*did not end within 0.3 s"):
        backend.settle_leftovers(set())
    assert backend.executor.shut_down, "nothing was started: Flux is let go"


def test_every_submitted_job_names_its_owner(make_backend):
    backend = make_backend([])
    backend.launch(spec(key=3), on(0))
    owner = FakeExecutor.latest.submitted[-1].jobspec.attrs["user.snakemake"]
    assert owner["run"] == "new-run"
    assert owner["pid"] == os.getpid()
    assert owner["pid_started"]
    assert (owner["jobid"], owner["key"]) == ("7", 3)
    backend._wake.close()


@pytest.mark.parametrize(
    ("state", "resumable", "action"),
    [
        ("RUN", {1}, ADOPT),
        ("RUN", set(), CANCEL),
        ("DEPEND", {1}, CANCEL),
        ("PRIORITY", set(), CANCEL),
        ("SCHED", {1}, CANCEL),
        ("CLEANUP", {1}, WAIT),
    ],
)
def test_decide(state, resumable, action):
    leftover = Leftover(1, "f1", state, DEAD)
    assert decide(leftover, resumable, "new-run")[0] == action


def test_own_and_living_runs_are_left_alone():
    living = owner_identity("living-run")
    assert run_alive(living)
    assert decide(Leftover(1, "f1", "RUN", living), set(), "new-run")[0] == LEAVE
    assert decide(Leftover(1, "f1", "RUN", DEAD), set(), "dead-run")[0] == LEAVE
    assert not run_alive({**living, "pid_started": living["pid_started"] + 1}), "a reused pid"
    assert not run_alive(DEAD)


def test_adopted_jobs_never_re_attached_are_cancelled_when_the_run_ends(make_backend):
    backend = make_backend([ours(1, "RUN"), ours(2, "RUN")])
    backend.settle_leftovers({"f1", "f2"})
    backend.attach(spec(key=9), backend.find_running("f1"))
    backend.instance.cancelled.clear()
    backend.close()
    assert sorted(backend.instance.cancelled) == [2], "only the one never re-attached"


def test_listing_jobs_keeps_the_ctrl_c_handler(make_backend):
    """flux-python's job-list leaves SIGINT at its default: a later Ctrl-C
    would kill Snakemake without cancelling any job."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        backend = make_backend([ours(1, "DEPEND")])
        backend.settle_leftovers(set())
        assert signal.getsignal(signal.SIGINT) is handler
    finally:
        signal.signal(signal.SIGINT, previous)
    backend._wake.close()
