"""Hand-written journals for the journal, summary and report tests."""

from __future__ import annotations

import json
from pathlib import Path

RUN = {
    "event": "run",
    "t": 0.0,
    "run": "r1",
    "backend": "local",
    "policy": "backfill",
    "nodes": [{"rank": 0, "name": "n0", "cores": [0, 1], "gpus": []}],
}

END_EVENT = {"success": "finished", "cancelled": "cancelled"}


def write_events(path: Path, events: list[dict], torn_tail: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as out:
        for event in events:
            out.write(json.dumps(event) + "\n")
        out.write(torn_tail)
    return path


def job_events(
    key,
    rule,
    start,
    end,
    cores,
    status="success",
    rank=0,
    log="x.log",
    *,
    jobid=None,
    attempt=1,
    wildcards=None,
    gpus=(),
    written=None,
):
    """queued/started/end lines of one attempt. ``start`` None: never started
    (withdrawn, if ``end`` is given); ``end`` None: still running. ``written``:
    the end line's ``t`` when it differs from the backend's ``end``."""
    events = [
        {
            "event": "queued",
            "t": 0.0,
            "key": key,
            "rule": rule,
            "wildcards": {"i": str(key)} if wildcards is None else wildcards,
            "jobid": key if jobid is None else jobid,
            "attempt": attempt,
            "request": {},
            "log": log,
        }
    ]
    if start is not None:
        events.append(
            {
                "event": "started",
                "t": start,
                "key": key,
                "backend_id": str(key),
                "start": start,
                "placement": [{"rank": rank, "cores": list(cores), "gpus": list(gpus)}],
            }
        )
    if end is not None:
        line = {
            "event": END_EVENT.get(status, "failed"),
            "t": end if written is None else written,
            "key": key,
            "status": status,
            "exit_code": 0 if status == "success" else 3,
            "reason": "r" if start is not None else "not started",
        }
        if written is not None:
            line["end"] = end
        events.append(line)
    return events
