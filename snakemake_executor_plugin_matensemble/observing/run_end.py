"""Why the run ended, in a small machine-readable file beside the journal.

``<journal-dir>/run-end.json`` (or ``$MATENSEMBLE_RUN_END``, which a campaign's
batch script sets) is replaced atomically whenever the reason becomes known:
``running`` when the run starts, then ``allocation_ended``, ``job_failed`` or
``interrupted`` as soon as that happens, and the final reason at shutdown:

| reason | when |
|---|---|
| ``complete`` | nothing failed, nothing was left for the allocation's end, no interruption |
| ``allocation_ended`` | jobs were left because they could not finish before the end |
| ``job_failed`` | a job failed for good (after Snakemake's retries): ``rule``, ``log`` |
| ``no_progress`` | the allocation ended, no job finished in this run: ``job``, ``runtime_s``, |
|  | ``walltime_s`` |
| ``interrupted`` | Ctrl-C, SIGTERM, cancel |

A campaign (:mod:`.campaign`) reads it to decide whether the next allocation runs.
Every time is epoch seconds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("snakemake.logging.matensemble.run_end")

#: the environment variable that names the record's path (a campaign sets it)
RUN_END_ENV = "MATENSEMBLE_RUN_END"
RUN_END_NAME = "run-end.json"
#: every reason the record can give, ``running`` until the run ends
REASONS = ("running", "complete", "allocation_ended", "job_failed", "no_progress", "interrupted")


@dataclass
class RunEnd:
    """The record's content (see the module's table)."""

    run: str
    reason: str = "running"
    started: float = field(default_factory=time.time)
    ended: float | None = None
    #: Snakemake jobs done and failed in this run; ``left``: jobs still to run
    #: (None where the number of jobs to run is unknown)
    done: int = 0
    failed: int = 0
    left: int | None = None
    journal: str = ""
    #: job_failed: the first job that failed for good
    rule: str | None = None
    job: str | None = None
    log: str | None = None
    message: str | None = None
    #: no_progress: the job's runtime and the allocation's length, seconds
    runtime_s: float | None = None
    walltime_s: float | None = None
    #: when the allocation ends (epoch seconds), where known
    allocation_end: float | None = None


def run_end_path(journal_dir: str | Path) -> Path:
    """Where the record goes: ``$MATENSEMBLE_RUN_END``, else ``journal_dir/run-end.json``."""
    override = os.environ.get(RUN_END_ENV)
    return Path(override) if override else Path(journal_dir) / RUN_END_NAME


def write_atomically(path: str | Path, data: dict[str, Any]) -> None:
    """Replace ``path`` with ``data`` as JSON (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            json.dump(data, stream, indent=1)
            stream.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_run_end(path: str | Path) -> RunEnd | None:
    """The record at ``path``; None if there is none or it cannot be read."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    known = {name for name in RunEnd.__dataclass_fields__}
    return RunEnd(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class LeftForTheEnd:
    """A job withdrawn because it could not finish before the allocation's end."""

    label: str
    runtime_s: float | None


def final_reason(interrupted: bool, failed: bool, left_for_end: bool, done: int) -> str:
    """The run's reason, most telling first: an interruption, a failure, no
    job finished while the end withdrew jobs, the end withdrew jobs, else
    complete."""
    if interrupted:
        return "interrupted"
    if failed:
        return "job_failed"
    if left_for_end:
        return "no_progress" if done == 0 else "allocation_ended"
    return "complete"


class RunEndRecorder:
    """Keeps the record of one run current (any thread; each write replaces the file).

    Writing never raises: a record that cannot be written is logged once.
    """

    def __init__(self, path: str | Path, run_id: str, journal: str | Path = ""):
        self.path = Path(path)
        self.record = RunEnd(run=run_id, journal=str(journal))
        #: the number of Snakemake jobs this run set out to run, where known
        self.total_jobs: int | None = None
        self._interrupted = False
        self._left: list[LeftForTheEnd] = []
        self._lock = threading.Lock()
        self._warned = False
        self._write()

    @classmethod
    def beside(cls, journal_path: str | Path, run_id: str) -> RunEndRecorder:
        """The recorder of the run whose journal is ``journal_path``
        (``<journal-dir>/<run-id>/journal.jsonl``)."""
        journal_dir = Path(journal_path).parent.parent
        return cls(run_end_path(journal_dir), run_id, journal_path)

    # -- as soon as it is known ------------------------------------------------------
    def interrupted(self) -> None:
        with self._lock:
            self._interrupted = True
            self.record.reason = "interrupted"
        self._write()

    def job_failed(self, rule: str, job: str, log_path: str, message: str) -> None:
        """A job failed for good (Snakemake will not retry it); the first one is named."""
        with self._lock:
            if self.record.rule is None:
                self.record.rule, self.record.job = rule, job
                self.record.log, self.record.message = log_path, message
            if not self._interrupted:
                self.record.reason = "job_failed"
        self._write()

    def left_for_the_end(self, jobs: list[LeftForTheEnd], end_epoch: float | None) -> None:
        """Jobs were withdrawn: they cannot finish before the allocation ends."""
        with self._lock:
            self._left.extend(jobs)
            self.record.allocation_end = end_epoch
            if self.record.reason == "running":
                self.record.reason = "allocation_ended"
        self._write()

    # -- at shutdown -------------------------------------------------------------------
    def finish(self, done: int, failed: int) -> RunEnd:
        """The final record: counts, end time and reason (see :func:`final_reason`)."""
        with self._lock:
            record = self.record
            record.done, record.failed = done, failed
            record.ended = time.time()
            if self.total_jobs is not None:
                record.left = max(0, self.total_jobs - done)
            record.reason = final_reason(
                self._interrupted, record.rule is not None, bool(self._left), done
            )
            if record.reason == "no_progress":
                self._name_the_longest(record)
        self._write()
        return record

    def _name_the_longest(self, record: RunEnd) -> None:
        known = [job for job in self._left if job.runtime_s is not None]
        longest = max(known, key=lambda job: job.runtime_s or 0.0, default=None)
        chosen = longest or (self._left[0] if self._left else None)
        if chosen is not None:
            record.job, record.runtime_s = chosen.label, chosen.runtime_s
        if record.allocation_end is not None:
            record.walltime_s = round(record.allocation_end - record.started, 1)

    def _write(self) -> None:
        with self._lock:
            data = asdict(self.record)
        try:
            write_atomically(self.path, data)
        except OSError as error:
            if not self._warned:
                self._warned = True
                log.warning(f"matensemble: could not write {self.path}: {error}")
