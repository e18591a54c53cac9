"""The live status line and the optional ``status.json`` for dashboards."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger("snakemake.logging.matensemble.status")

#: How the enclosing (or only) Flux instance is named beside child instances.
ENCLOSING = "enclosing"


@dataclass(frozen=True)
class RunStatus:
    """How the run stands now: jobs queued and running, free and total cores
    and GPUs of the allocation, Snakemake jobs done and failed so far.

    ``running_by_instance``: with child Flux instances only, the started jobs
    in each child (by name) and in the ``enclosing`` instance.

    Not :class:`.backends.base.JobStatus` (the outcome of one backend job).
    """

    queued: int
    running: int
    free_cores: int
    total_cores: int
    free_gpus: int
    total_gpus: int
    done: int
    failed: int
    running_by_instance: dict[str, int] | None = None

    def line(self) -> str:
        gpus = f", {self.free_gpus}/{self.total_gpus} GPUs free" if self.total_gpus else ""
        split = ""
        if self.running_by_instance:
            split = " (" + ", ".join(f"{n} {c}" for n, c in self.running_by_instance.items()) + ")"
        return (
            f"matensemble: {self.queued} queued, {self.running} running{split}, "
            f"{self.free_cores}/{self.total_cores} cores free{gpus}, "
            f"{self.done} done, {self.failed} failed."
        )


class StatusReporter:
    """Logs a status line every ``interval`` seconds (0: never) and keeps
    ``status_file`` (if given) current, replacing it atomically.

    ``done`` and ``failed`` count Snakemake jobs by their latest outcome when
    fed through :meth:`finished` (a job that failed and then succeeded on retry
    moves from failed to done).
    """

    def __init__(self, interval: float, status_file: str | None):
        #: seconds between status lines (wall time; the dispatcher's monotonic
        #: clock schedules them); 0: no lines
        self.interval = interval
        self.status_file = Path(status_file) if status_file else None
        self.done = 0
        self.failed = 0
        self._outcome: dict[object, bool] = {}

    def finished(self, job: object, ok: bool) -> None:
        """An attempt of Snakemake job ``job`` (its jobid) ended; ``ok``: it
        succeeded. Counts each job once, by its latest attempt."""
        before = self._outcome.get(job)
        if before is not None:
            if before:
                self.done -= 1
            else:
                self.failed -= 1
        self._outcome[job] = ok
        if ok:
            self.done += 1
        else:
            self.failed += 1

    @property
    def tick_interval(self) -> float | None:
        """Seconds between :meth:`report` calls (None: never): the status
        interval, or 5 s when only the status file is kept."""
        if self.interval:
            return self.interval
        return 5.0 if self.status_file is not None else None

    def report(self, status: RunStatus) -> None:
        if self.interval:
            log.info(status.line())
        if self.status_file is not None:
            self.write_file(status)

    def write_file(self, status: RunStatus) -> None:
        """Replace the status file atomically. Its ``time`` is epoch seconds
        (``time.time()``), the journal's clock. Raises :class:`OSError` if the
        file cannot be written."""
        assert self.status_file is not None
        self.status_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.status_file.with_name(f".{self.status_file.name}.{os.getpid()}.tmp")
        fields = asdict(status)
        if fields["running_by_instance"] is None:  # no children: the file as before
            del fields["running_by_instance"]
        tmp.write_text(json.dumps({"time": time.time(), **fields}, indent=1))
        os.replace(tmp, self.status_file)
