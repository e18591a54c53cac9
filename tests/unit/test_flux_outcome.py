"""A finished Flux future as a result (pure: backends/flux/outcome.py)."""

import concurrent.futures
import errno

import pytest

from snakemake_executor_plugin_matensemble.backends import JobStatus
from snakemake_executor_plugin_matensemble.backends.flux import outcome

from .flux_fakes import FakeJobException


def finished(result=None, error=None, cancel=False):
    future = concurrent.futures.Future()
    if cancel:
        future.cancel()
    elif error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
    return future


def of(future, **kwargs):
    return outcome(
        7, future, job_exception=FakeJobException, where="Flux job fX", now=12.5, **kwargs
    )


@pytest.mark.parametrize(
    ("future", "kwargs", "status", "words"),
    [
        (finished(0), {}, JobStatus.SUCCESS, "Flux job fX succeeded"),
        (finished(3), {}, JobStatus.FAILED, "(Flux job fX) exited with code 3"),
        (finished(-9), {}, JobStatus.FAILED, "killed by signal 9"),
        (finished(cancel=True), {}, JobStatus.CANCELLED, "before it reached Flux"),
        (
            finished(error=FakeJobException("timeout", "expired")),
            {"walltime_s": 90},
            JobStatus.TIMEOUT,
            "exceeded its runtime of 1.5 min (Flux job fX: expired)",
        ),
        (
            finished(error=FakeJobException("cancel")),
            {},
            JobStatus.FAILED,
            "is the instance shutting down?",
        ),
        (
            finished(error=FakeJobException("cancel")),
            {"cancelling": True},
            JobStatus.CANCELLED,
            "was cancelled",
        ),
        (
            finished(error=FakeJobException("exec", "node failure on vm (rank 1)")),
            {},
            JobStatus.FAILED,
            "was lost with its node (Flux job fX: node failure on vm (rank 1)); --retries",
        ),
        (
            finished(error=FakeJobException("exec", "task 0: start failed")),
            {},
            JobStatus.FAILED,
            "could not be started by Flux",
        ),
        (
            finished(error=FakeJobException("dependency", "x")),
            {},
            JobStatus.FAILED,
            "type=dependency: x",
        ),
        (
            finished(error=OSError(errno.ECONNRESET, "reset")),
            {"instance_lost": lambda error: "gone"},
            JobStatus.FAILED,
            "gone",
        ),
        (finished(error=OSError("bad jobspec")), {}, JobStatus.LAUNCH_ERROR, "rejected by Flux"),
        (
            finished(error=RuntimeError("boom")),
            {},
            JobStatus.FAILED,
            "failed: RuntimeError('boom')",
        ),
    ],
)
def test_outcome(future, kwargs, status, words):
    result = of(future, **kwargs)
    assert result.status is status
    assert words in result.reason
    assert (result.key, result.time) == (7, 12.5)


def test_node_failure_names_the_lost_broker_ranks_not_shell_ranks():
    lost = of(finished(error=FakeJobException("exec", "node failure on vm (rank 3)")))
    assert lost.lost_ranks == (3,)
    shell = of(
        finished(error=FakeJobException("node-failure", "node failure on vm (shell rank 1)"))
    )
    assert shell.lost_ranks == ()
    assert of(finished(3)).lost_ranks == ()
