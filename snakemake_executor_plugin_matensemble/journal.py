"""The run journal: one JSON line per event, written as it happens.

``.snakemake/matensemble/<run-id>/journal.jsonl`` holds a ``run`` line (backend,
policy, the allocation's nodes), then per job a ``queued`` line (rule,
wildcards, Snakemake jobid, attempt, request, log path), a ``started`` line
(backend job id, ranks, core and GPU ids) and an end line (``finished``,
``failed`` or ``cancelled``, with status, exit code, signal and reason), and an
``end`` line. Every line is flushed when written, so a killed run keeps
everything up to the kill; readers skip a torn last line.
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

from .allocation import Allocation, Placement
from .request import ResourceRequest

END_EVENTS = {"finished", "failed", "cancelled"}


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
    """Appends events to ``journal.jsonl`` (thread-safe, flushed per line)."""

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

    def started(self, key: int, backend_id: str, placement: Placement | None, at: float) -> None:
        self.write(
            "started",
            key=key,
            backend_id=backend_id,
            start=at,
            placement=_placement_record(placement),
        )

    def ended(self, key: int, event: str, status: str, **fields: Any) -> None:
        self.write(event, key=key, status=status, **fields)

    def close(self, **fields: Any) -> None:
        self.write(
            "end", journal_cpu_s=round(self.cpu_s, 6), journal_events=self.events + 1, **fields
        )
        with self._lock:
            self._stream.close()


# -- reading --------------------------------------------------------------------
@dataclass
class JobRecord:
    """Everything the journal says about one job (one attempt)."""

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
        return self.start is not None

    def duration(self, until: float | None = None) -> float:
        if self.start is None:
            return 0.0
        end = self.end if self.end is not None else until
        return max(0.0, (end if end is not None else self.start) - self.start)

    @property
    def label(self) -> str:
        wildcards = ",".join(f"{k}={v}" for k, v in self.wildcards.items())
        return f"{self.rule}[{wildcards}]" if wildcards else self.rule


@dataclass
class RunRecord:
    """A whole journal: the run line, the jobs, the end line (if any)."""

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


def iter_events(path: str | Path) -> Iterator[dict[str, Any]]:
    """The journal's events; a torn line (a run killed mid-write) is skipped."""
    with open(path, encoding="utf-8") as stream:
        for line in stream:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def read_journal(path: str | Path) -> RunRecord:
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
            record.placement = event.get("placement", [])
        elif kind in END_EVENTS:
            record.end = event["t"]
            record.status = event.get("status", kind)
            record.exit_code = event.get("exit_code")
            record.signal = event.get("signal")
            record.reason = event.get("reason", "")
    return RunRecord(run, sorted(jobs.values(), key=lambda r: r.key), end, last)
