"""The stateful Flux backend at its seam, with a small fake of the flux-python API.

What users rely on is covered against real Flux in tests/flux/; these tests pin
down submission, callbacks, withdrawing, purging and cancelling precisely and
run anywhere. The pure parts have their own files (test_flux_jobspec.py,
test_flux_outcome.py, test_flux_resources.py, test_flux_options.py).
"""

import errno
import os
from types import SimpleNamespace

import pytest

from snakemake_executor_plugin_matensemble.backends import JobFinished, JobStatus, LaunchSpec
from snakemake_executor_plugin_matensemble.backends.flux import FluxBackend, FluxOptions

from . import flux_fakes
from .flux_fakes import FakeExecutor, FakeJobException, fake_flux, on, spec


@pytest.fixture(autouse=True)
def logs_in_tmp_path(tmp_path, monkeypatch):
    """Launching creates the log's directory: keep it under tmp_path."""
    monkeypatch.setattr(flux_fakes, "LOG_DIR", str(tmp_path / "logs"))


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
    assert finished.status is JobStatus.SUCCESS
    assert backend.running_count == 0


@pytest.mark.parametrize(
    ("finish", "status", "words"),
    [
        (lambda f: f.set_result(3), JobStatus.FAILED, "(Flux job f4242) exited with code 3"),
        (lambda f: f.set_result(-9), JobStatus.FAILED, "killed by signal 9"),
        (
            lambda f: f.set_exception(FakeJobException("timeout", "resource allocation expired")),
            JobStatus.TIMEOUT,
            "exceeded its runtime of 2 min (Flux job f4242: resource allocation expired)",
        ),
        (
            lambda f: f.set_exception(FakeJobException("cancel", "cancelled by user")),
            JobStatus.CANCELLED,
            "was cancelled",
        ),
        (
            lambda f: f.set_exception(FakeJobException("cancel")),
            JobStatus.FAILED,
            "is the instance shutting down?",
        ),
        (
            lambda f: f.set_exception(OSError(errno.ENOSYS, "Function not implemented")),
            JobStatus.FAILED,
            "was lost with the Flux instance",
        ),
        (
            lambda f: f.set_exception(FakeJobException("exec", "task 0: start failed")),
            JobStatus.FAILED,
            "could not be started by Flux",
        ),
        (
            lambda f: f.set_exception(FakeJobException("node-failure", "lost rank 3")),
            JobStatus.FAILED,
            "was lost with its node (Flux job f4242: lost rank 3)",
        ),
        (lambda f: f.set_exception(OSError("invalid jobspec")), JobStatus.LAUNCH_ERROR, "rejected"),
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
    assert all(r.status is JobStatus.CANCELLED for r in results)
    # a Flux id that arrives after the cancel is cancelled (by the dispatcher
    # thread, at its next wait: callbacks make no RPCs)
    backend.enclosing._on_jobid(9, SimpleNamespace(jobid=lambda: 99))
    assert 99 not in backend.cancelled
    backend.wait(0)
    assert 99 in backend.cancelled


def test_one_executor_for_all_jobs(backend):
    for key in range(1, 30):
        backend.launch(spec(key=key), on(0))
    assert FakeExecutor.created == 1
    assert len(backend.executor.submitted) == 29


def test_log_directory_is_created(backend, tmp_path):
    log_spec = LaunchSpec(**{**spec().__dict__, "log_path": str(tmp_path / "a/b/c.log")})
    backend.launch(log_spec, on(0))
    assert os.path.isdir(tmp_path / "a/b")


def test_a_raising_callback_still_delivers_a_failed_result(backend, monkeypatch):
    """flux-core swallows exceptions raised in future callbacks: the guard turns
    them into a failed result instead of losing the job."""

    def broken(*args, **kwargs):
        raise KeyError("boom")

    monkeypatch.setattr(backend.enclosing, "outcome", broken)
    events = run_one(backend, lambda f: f.set_result(0))
    (failed,) = [e for e in events if isinstance(e, JobFinished)]
    assert failed.key == 5
    assert failed.status is JobStatus.FAILED
    assert "KeyError('boom')" in failed.reason
    assert backend.running_count == 0


def test_a_withdrawn_job_is_cancelled_and_reports_nothing(backend):
    backend.launch(spec(key=1), on(1))
    backend.launch(spec(key=2), on(1))
    first, second = backend.executor.submitted
    first.assign(21)
    second.assign(22)
    second.start()
    assert backend.withdraw(1) is True
    assert backend.withdraw(2) is False  # it runs already
    assert 21 in backend.cancelled
    second.set_result(0)
    events = backend.wait(0.5) + backend.wait(0.05)
    assert [e.key for e in events if isinstance(e, JobFinished)] == [2]
    # the key may be launched again, and then counts
    backend.launch(spec(key=1), on(0))
    backend.executor.submitted[-1].set_result(0)
    assert [e.key for e in backend.wait(0.5)] == [1]


def test_a_withdrawn_job_without_a_flux_id_yet_is_cancelled_when_it_gets_one(backend):
    backend.launch(spec(key=1), on(1))
    (future,) = backend.executor.submitted
    assert backend.withdraw(1) is True
    future.assign(31)
    backend.wait(0)
    assert 31 in backend.cancelled


def test_successful_jobs_are_purged_beyond_the_newest_kept(backend, monkeypatch):
    import snakemake_executor_plugin_matensemble.backends.flux.purge as module

    monkeypatch.setattr(module, "PURGE_BATCH", 3)
    backend.enclosing.options = FluxOptions(keep_inactive=2, cancel_timeout=1)
    purged = []

    class Handle:
        def rpc(self, topic, payload):
            purged.append((topic, payload["id"], payload["force"]))
            return SimpleNamespace(get=lambda: {})

    backend.enclosing._purge_handle = Handle()
    for key in range(1, 8):
        backend.launch(spec(key=key), on(0))
        future = backend.executor.submitted[-1]
        future.assign(100 + key)
        future.set_result(0 if key != 2 else 1)  # job 2 failed: kept
    backend.wait(0.1)
    assert purged == [("job-manager.purge-id", 100 + k, 1) for k in (1, 3, 4, 5)]
    assert backend.purged == 4


def test_jobs_of_an_executor_whose_thread_died_are_followed_by_a_new_one(backend):
    """flux-python can break its executor (an error in its own callbacks): the
    jobs are not failed but re-attached by a new executor, which reports
    their real outcome."""
    backend.launch(spec(key=5, walltime_s=120), on(0))
    (future,) = backend.executor.submitted
    future.assign(4242)
    future.start()
    broken = backend.executor
    broken._broken_event.set()
    future.set_exception(OSError(errno.ENODATA, "No data available"))
    events = backend.wait(0.2)
    assert [type(e).__name__ for e in events] == ["JobStarted"]
    assert backend.executor is not broken
    assert broken.shut_down
    assert backend.executor_restarts == 1
    assert backend.running_count == 1
    (attached,) = backend.executor.submitted
    assert attached.attached == 4242
    attached.assign(4242)
    attached.start()  # replayed: not said twice
    attached.set_result(0)
    (finished,) = backend.wait(0.5)
    assert finished.ok
    assert "f4242" in finished.reason
