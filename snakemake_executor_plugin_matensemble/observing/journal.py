"""The run journal: one JSON line per event, written as it happens.

``.snakemake/matensemble/<run-id>/journal.jsonl`` holds a ``run`` line (backend,
policy, the allocation's nodes), then per job a ``queued`` line (rule,
wildcards, Snakemake jobid, attempt, request, log path), a ``started`` line
(backend job id, ranks, core and GPU ids, and ``instance``: the child Flux
instance it runs in, only where it runs in one) and an end line (``finished``,
``failed`` or ``cancelled``, with status, exit code, signal and reason), a
``verdict`` line where Snakemake failed an attempt the backend finished (missing
output files), and an ``end`` line. Every line is flushed when written, so a killed run keeps
everything up to the kill; readers skip a torn last line.

Clocks and units: every time in the journal is a POSIX timestamp, seconds
since the epoch (``time.time()``'s clock, as Flux's event timestamps), as a
float; every duration is in seconds. Monotonic clock readings (the packer's,
the dispatcher's) are never written: they mean nothing outside this process.
``t`` is when the line was written; ``start`` (``started`` lines) and ``end``
(end lines, when the backend said) are when the backend saw the job start and
end, which is what runtimes are computed from. CPU times (``journal_cpu_s``,
``plugin_cpu_s``, ...) are CPU seconds, not wall time.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..backends.base import JobStatus, ResourceEventKind
from ..packing.allocation import Allocation
from ..packing.nodes import Placement
from ..packing.resource_request import ResourceRequest

END_EVENTS = frozenset({"finished", "failed", "cancelled"})
#: Job statuses (``status`` of an end line) that count as failures: the values
#: of ``backends.base.JobStatus`` other than success and cancelled.
FAILED_STATUSES = frozenset(status.value for status in JobStatus if status.failed)


def job_label(rule: str, wildcards: dict[str, Any]) -> str:
    """``md[T=300,seed=1]``: a job as shown in summaries, reports and job names."""
    text = ",".join(f"{k}={v}" for k, v in wildcards.items())
    return f"{rule}[{text}]" if text else rule


def _request_record(request: ResourceRequest) -> dict[str, Any]:
    return {
        "tasks": request.tasks,
        "cores_per_task": request.cores_per_task,
        "gpus_per_task": request.gpus_per_task,
        "nodes": request.nodes,
        "exclusive": request.exclusive,
        "walltime_s": request.walltime_s,
    }


def _placement_record(placement: Placement | None) -> list[dict[str, Any]]:
    if placement is None:
        return []
    return [
        {"rank": s.rank, "cores": list(s.cores), "gpus": list(s.gpus)} for s in placement.shares
    ]


class Journal:
    """Appends events to ``journal.jsonl`` (thread-safe, flushed per line).

    Creating it makes ``directory``; raises :class:`OSError` if that or the
    file cannot be made. ``cpu_s``: CPU seconds spent writing (thread time).
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / "journal.jsonl"
        self._stream = open(self.path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
        self._lock = threading.Lock()
        #: CPU seconds spent writing (all threads), to report the journal's cost.
        self.cpu_s = 0.0
        self.events = 0

    def write(self, event: str, **fields: Any) -> None:
        """Append one line; ``t`` is the time of writing (epoch seconds).

        Thread-safe; a line written after :meth:`close` is dropped. Raises
        :class:`OSError` if the file cannot be written (disk full).
        """
        started = time.thread_time()
        line = json.dumps({"event": event, "t": round(time.time(), 6), **fields}, default=str)
        with self._lock:
            if not self._stream.closed:
                self._stream.write(line + "\n")
                self.events += 1
            self.cpu_s += time.thread_time() - started

    def run_started(self, run_id: str, backend: str, policy: str, allocation: Allocation) -> None:
        self.write(
            "run",
            run=run_id,
            backend=backend,
            policy=policy,
            workdir=os.getcwd(),
            nodes=[
                {"rank": s.rank, "name": s.name, "cores": list(s.cores), "gpus": list(s.gpus)}
                for s in allocation.specs
            ],
        )

    def queued(self, key: int, job: dict[str, Any], request: ResourceRequest, log: str) -> None:
        self.write("queued", key=key, request=_request_record(request), log=log, **job)

    def started(
        self,
        key: int,
        backend_id: str,
        placement: Placement | None,
        at: float,
        instance: str = "",
    ) -> None:
        """The job runs. ``at``: when the backend started it, epoch seconds
        (``JobStarted.time``); never a monotonic reading. ``instance``: the
        child Flux instance it runs in (written only then: "" is the
        enclosing or only instance)."""
        where = {"instance": instance} if instance else {}
        self.write(
            "started",
            key=key,
            backend_id=backend_id,
            start=at,
            placement=_placement_record(placement),
            **where,
        )

    def ended(
        self, key: int, event: str, status: str, end: float | None = None, **fields: Any
    ) -> None:
        """The job ended (or was withdrawn before it started).

        ``end``: when the backend saw it end, epoch seconds (``JobFinished.time``);
        None or 0 when unknown, and the time of writing is used instead.
        """
        if end:
            fields["end"] = end
        self.write(event, key=key, status=status, **fields)

    def resource_event(
        self,
        kind: ResourceEventKind,
        ranks: list[int],
        reason: str = "",
        at: float | None = None,
        **fields: Any,
    ) -> None:
        """The allocation changed: ``kind`` is ``drain``, ``undrain``, ``down``,
        ``up`` or ``expiration`` (then ``expiration``: the new end, epoch
        seconds); ``at``: when it happened, epoch seconds."""
        self.write("resource", kind=kind, ranks=list(ranks), reason=reason, at=at, **fields)

    def previous_run(self, run_id: str, journal: str | Path, done: int, left: int) -> None:
        """This run goes on where an earlier one (e.g. the previous allocation's)
        stopped: its run id, journal path, jobs done there, jobs it left."""
        self.write("previous", run=run_id, journal=str(journal), done=done, left=left)

    def verdict(self, key: int, status: str, reason: str) -> None:
        """Snakemake's own verdict on an attempt the backend finished: e.g.
        ``failed`` when its output files are missing after a successful exit.
        Overrides the end line's status and reason (not its end time)."""
        self.write("verdict", key=key, status=status, reason=reason)

    def refused(self, key: int, job: dict[str, Any], log: str, reason: str) -> None:
        """An attempt refused before it could be queued (its command could not
        be prepared, e.g. Snakemake's check of the shell): journaled as a
        ``launch_error`` that never started, so the summary counts it."""
        self.write("queued", key=key, request={}, log=log, **job)
        self.ended(key, "failed", "launch_error", reason=reason)

    def close(self, **fields: Any) -> None:
        """Write the ``end`` line (with the journal's own CPU seconds) and close."""
        self.write(
            "end", journal_cpu_s=round(self.cpu_s, 6), journal_events=self.events + 1, **fields
        )
        with self._lock:
            self._stream.close()


# -- reading --------------------------------------------------------------------
@dataclass
class JobRecord:
    """Everything the journal says about one attempt of one Snakemake job.

    ``queued``, ``start`` and ``end`` are epoch seconds (None: not reached
    before the journal ends); a retried job has one record per attempt, with
    the same ``jobid``.
    """

    key: int
    rule: str = "?"
    wildcards: dict[str, str] = field(default_factory=dict)
    jobid: Any = None
    attempt: int = 1
    request: dict[str, Any] = field(default_factory=dict)
    log: str = ""
    queued: float | None = None
    start: float | None = None
    end: float | None = None
    backend_id: str = ""
    #: the child Flux instance the attempt ran in ("": the enclosing or only one)
    instance: str = ""
    placement: list[dict[str, Any]] = field(default_factory=list)
    status: str = "unfinished"
    exit_code: int | None = None
    signal: int | None = None
    reason: str = ""

    @property
    def cores(self) -> int:
        return sum(len(share["cores"]) for share in self.placement)

    @property
    def gpus(self) -> int:
        return sum(len(share["gpus"]) for share in self.placement)

    @property
    def ran(self) -> bool:
        """The attempt started (withdrawn and never-started ones did not)."""
        return self.start is not None

    @property
    def failed(self) -> bool:
        return self.status in FAILED_STATUSES

    @property
    def job(self) -> Any:
        """What identifies the Snakemake job across its attempts: its jobid
        (the journal key for a journal written without one)."""
        return ("jobid", str(self.jobid)) if self.jobid is not None else ("key", self.key)

    def duration(self, until: float | None = None) -> float:
        """Seconds from start to end; a job still running at the end of the
        journal runs until ``until`` (epoch seconds; None: 0 s). 0 if it never
        started."""
        if self.start is None:
            return 0.0
        end = self.end if self.end is not None else until
        return max(0.0, (end if end is not None else self.start) - self.start)

    @property
    def label(self) -> str:
        return job_label(self.rule, self.wildcards)


@dataclass
class RunRecord:
    """A whole journal: the run line, the jobs, the end line (if any).

    ``jobs`` has one record per attempt, in journal-key order; ``last_time``
    is the latest ``t`` of any line, epoch seconds (where a killed run's
    journal stops).
    """

    run: dict[str, Any]
    jobs: list[JobRecord]
    end: dict[str, Any] | None
    last_time: float

    @property
    def total_cores(self) -> int:
        return sum(len(node["cores"]) for node in self.run.get("nodes", []))

    @property
    def total_gpus(self) -> int:
        return sum(len(node["gpus"]) for node in self.run.get("nodes", []))


def journal_paths(journal_dir: str | Path) -> list[Path]:
    """The journals in ``journal_dir``, oldest first: by the run id (the
    directory's name), which starts with the run's start time."""
    return sorted(Path(journal_dir).glob("*/journal.jsonl"), key=lambda p: p.parent.name)


def find_previous_journal(journal_dir: str | Path, current: str | Path) -> Path | None:
    """The newest journal in ``journal_dir`` other than ``current``, or None."""
    current_path = Path(current).resolve()
    paths = [p for p in journal_paths(journal_dir) if p.resolve() != current_path]
    return paths[-1] if paths else None


def iter_events(path: str | Path) -> Iterator[dict[str, Any]]:
    """The journal's events; a torn line (a run killed mid-write) is skipped.

    Raises :class:`OSError` if the file cannot be opened.
    """
    with open(path, encoding="utf-8") as stream:
        for line in stream:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def read_journal(path: str | Path) -> RunRecord:
    """Read a journal (of a finished, running or killed run).

    Raises :class:`OSError` (``FileNotFoundError``) if it cannot be opened.
    """
    run: dict[str, Any] = {}
    end = None
    jobs: dict[int, JobRecord] = {}
    last = 0.0
    for event in iter_events(path):
        kind = event.get("event")
        last = max(last, float(event.get("t", 0.0)))
        if kind == "run":
            run = event
            continue
        if kind == "end":
            end = event
            continue
        key = event.get("key")
        if key is None:
            continue
        record = jobs.setdefault(key, JobRecord(key))
        if kind == "queued":
            record.rule = event.get("rule", "?")
            record.wildcards = event.get("wildcards", {})
            record.jobid = event.get("jobid")
            record.attempt = event.get("attempt", 1)
            record.request = event.get("request", {})
            record.log = event.get("log", "")
            record.queued = event["t"]
        elif kind == "started":
            record.start = event.get("start", event["t"])
            record.backend_id = event.get("backend_id", "")
            record.instance = event.get("instance", "")
            record.placement = event.get("placement", [])
        elif kind in END_EVENTS:
            record.end = event.get("end") or event["t"]
            record.status = event.get("status", kind)
            record.exit_code = event.get("exit_code")
            record.signal = event.get("signal")
            record.reason = event.get("reason", "")
        elif kind == "verdict":
            record.status = event.get("status", record.status)
            record.reason = event.get("reason", record.reason)
    return RunRecord(run, sorted(jobs.values(), key=lambda r: r.key), end, last)
