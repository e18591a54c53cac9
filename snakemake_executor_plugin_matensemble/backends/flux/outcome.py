"""What became of a Flux job: a finished future as a :class:`JobFinished` (pure)."""

from __future__ import annotations

import errno
import re
from collections.abc import Callable
from typing import Any

from ..base import JobFinished, JobStatus

#: errno values that mean the Flux instance itself is gone, not the job
LOST_INSTANCE_ERRNOS = frozenset(
    {errno.ENOSYS, errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN, errno.EHOSTUNREACH}
)

#: Words in a Flux exception note that mean the job's node went away.
NODE_FAILURE_WORDS = ("node failure", "lost contact with job shell", "lost shell")


def outcome(
    key: int,
    future: Any,
    *,
    job_exception: type,
    where: str = "Flux job",
    walltime_s: float | None = None,
    cancelling: bool = False,
    instance_lost: Callable[[BaseException], str] | None = None,
    now: float = 0.0,
) -> JobFinished:
    """Map the finished ``future`` of one job to a :class:`JobFinished`; never raises
    for anything Flux can report.

    ``job_exception``: flux-python's ``JobException`` class. ``where``: how the
    job is named in reasons ("Flux job f2ZK..."). ``walltime_s``: the job's
    runtime limit in seconds, if any. ``cancelling``: the plugin is cancelling
    the run. ``instance_lost``: gives the reason for a job whose instance
    stopped answering. ``now``: the end time to report, epoch seconds.
    """
    if future.cancelled():
        return JobFinished(
            key, JobStatus.CANCELLED, "was cancelled before it reached Flux", time=now
        )
    error = future.exception()
    if error is None:
        code = future.result()
        if code == 0:
            return JobFinished(key, JobStatus.SUCCESS, f"{where} succeeded", 0, None, now)
        if code < 0:
            return JobFinished(
                key, JobStatus.FAILED, f"({where}) was killed by signal {-code}", None, -code, now
            )
        return JobFinished(
            key, JobStatus.FAILED, f"({where}) exited with code {code}", code, None, now
        )
    if isinstance(error, job_exception):
        return exception_outcome(key, error.type, error.note, where, walltime_s, cancelling, now)
    if isinstance(error, OSError) and error.errno in LOST_INSTANCE_ERRNOS:
        reason = (
            instance_lost(error) if instance_lost else f"was lost with the Flux instance ({error})"
        )
        return JobFinished(key, JobStatus.FAILED, reason, time=now)
    if isinstance(error, OSError):
        return JobFinished(key, JobStatus.LAUNCH_ERROR, f"was rejected by Flux: {error}", time=now)
    return JobFinished(key, JobStatus.FAILED, f"({where}) failed: {error!r}", time=now)


_BROKER_RANK = re.compile(r"(?<!shell )\brank (\d+)\)")


def lost_ranks(note: str | None) -> tuple[int, ...]:
    """Broker ranks named in a node-failure note ("node failure on host (rank 3)");
    job-relative shell ranks ("(shell rank 1)") are not broker ranks."""
    return tuple(sorted({int(rank) for rank in _BROKER_RANK.findall(note or "")}))


def exception_outcome(
    key: int,
    kind: str,
    note: str,
    where: str,
    walltime_s: float | None,
    cancelling: bool,
    now: float,
) -> JobFinished:
    """A Flux job exception of type ``kind`` with ``note`` as a :class:`JobFinished`."""
    if kind == "timeout":
        limit = f"{walltime_s / 60:g} min" if walltime_s else "its time limit"
        return JobFinished(
            key, JobStatus.TIMEOUT, f"exceeded its runtime of {limit} ({where}: {note})", time=now
        )
    if kind == "node-failure" or any(words in (note or "") for words in NODE_FAILURE_WORDS):
        return JobFinished(
            key,
            JobStatus.FAILED,
            f"was lost with its node ({where}: {note}); --retries reruns it on the nodes left",
            time=now,
            lost_ranks=lost_ranks(note),
        )
    if kind == "cancel" and not cancelling and not note:
        # not cancelled by us: the instance cancels everything when it shuts down
        return JobFinished(
            key,
            JobStatus.FAILED,
            f"was cancelled by Flux ({where}); is the instance shutting down?",
            time=now,
        )
    if kind == "cancel" or cancelling:
        return JobFinished(key, JobStatus.CANCELLED, f"was cancelled ({where}: {note})", time=now)
    if kind == "exec":
        return JobFinished(
            key, JobStatus.FAILED, f"could not be started by Flux ({where}: {note})", time=now
        )
    return JobFinished(
        key, JobStatus.FAILED, f"hit a Flux job exception ({where}, type={kind}: {note})", time=now
    )
