"""A running child instance: where it is, and how to open it from here."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .relay import child_uri, local_path_of, open_child


class ChildStartError(RuntimeError):
    """A child instance did not come up (its job ended, or it timed out)."""


@dataclass(frozen=True)
class ChildInstance:
    """A child of the enclosing instance, as the router needs it.

    ``uri`` reaches it from any node through the enclosing instance (the carrier);
    ``ranks`` are the enclosing ranks (nodes) it owns; ``jobid`` is its job in
    the enclosing instance, or None for a child the run attaches to but did not
    start (e.g. a benchmark's separately started test instance): such a child
    is never watched nor cancelled by the run.
    """

    name: str
    jobid: int | None
    ranks: tuple[int, ...]
    uri: str

    def local_rank(self, enclosing_rank: int) -> int:
        """The child's broker rank on enclosing rank ``enclosing_rank`` (a child's
        brokers take its nodes in rank order), for a job's ``ranks`` constraint."""
        try:
            return self.ranks.index(enclosing_rank)
        except ValueError:
            raise ValueError(
                f"enclosing rank {enclosing_rank} is not in child {self.name} (ranks {self.ranks})"
            ) from None

    def open(self) -> Any:
        """A new ``flux.Flux`` handle on the child (the router's handle opener)."""
        return open_child(self.uri)

    @property
    def handle_kwargs(self) -> dict[str, str]:
        """``FluxExecutor(handle_kwargs=...)`` for an executor in the child."""
        return {"url": self.uri}

    def executor(self) -> Any:
        """A new ``FluxExecutor`` whose handle reaches the child through a new relay."""
        import flux.job

        return flux.job.FluxExecutor(handle_kwargs=self.handle_kwargs)

    def reattach(self, jobids: Iterable[int]) -> tuple[Any, dict[int, Any]]:
        """After a relay died (its executor's pending futures failed, the child's
        jobs went on): a new executor and a future per job, attached by jobid,
        never resubmitted."""
        executor = self.executor()
        return executor, {int(jobid): executor.attach(int(jobid)) for jobid in jobids}


def first_rank(rset: dict[str, Any]) -> int:
    """The lowest enclosing rank in a job's R (where its broker rank 0 runs)."""
    ranks: list[int] = []
    for entry in rset["execution"]["R_lite"]:
        for part in str(entry["rank"]).split(","):
            first = part.split("-")[0]
            ranks.append(int(first))
    return min(ranks)


def wait_child(
    handle: Any, name: str, jobid: int, ranks: tuple[int, ...], timeout: float = 120.0
) -> ChildInstance:
    """Wait until the child job ``jobid`` posts its URI and finishes its start-up
    (rc1: resources and scheduler loaded); the child as a :class:`ChildInstance`."""
    import flux.job

    memo = _wait_memo_uri(handle, name, jobid, timeout)
    local_path = local_path_of(memo)
    rset = flux.job.job_kvs_lookup(handle, jobid, keys=["R"], decode=True)["R"]
    child = ChildInstance(name, jobid, ranks, child_uri(first_rank(rset), local_path))
    try:
        child.open().rpc("state-machine.wait").get()
    except OSError as exc:
        raise ChildStartError(f"child {name}: start-up failed ({exc})") from exc
    return child


def _wait_memo_uri(handle: Any, name: str, jobid: int, timeout: float) -> str:
    """The URI the child job posts in its memo once its broker listens."""
    import flux.job

    label = f"child {name} (job {flux.job.JobID(jobid).f58})"
    deadline = time.monotonic() + timeout
    future = flux.job.event_watch_async(handle, jobid)
    try:
        while True:
            try:
                future.wait_for(max(0.0, deadline - time.monotonic()))
            except OSError as exc:
                raise ChildStartError(f"{label} posted no URI within {timeout:.0f} s") from exc
            event = future.get_event()
            if event is None:
                raise ChildStartError(f"{label} ended before it posted its URI")
            if event.name == "memo" and "uri" in event.context:
                return str(event.context["uri"])
            if event.name in ("finish", "clean") or (
                event.name == "exception" and int(event.context.get("severity", 0)) == 0
            ):
                raise ChildStartError(f"{label} ended before it started: {event.context}")
    finally:
        future.cancel()
