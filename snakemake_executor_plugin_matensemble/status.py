"""The live status line and the optional ``status.json`` for dashboards."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger("snakemake.logging.matensemble.status")


@dataclass(frozen=True)
class Status:
    queued: int
    running: int
    free_cores: int
    total_cores: int
    free_gpus: int
    total_gpus: int
    done: int
    failed: int

    def line(self) -> str:
        gpus = f", {self.free_gpus}/{self.total_gpus} GPUs free" if self.total_gpus else ""
        return (
            f"matensemble: {self.queued} queued, {self.running} running, "
            f"{self.free_cores}/{self.total_cores} cores free{gpus}, "
            f"{self.done} done, {self.failed} failed."
        )


class StatusReporter:
    """Logs a status line every ``interval`` seconds (0: never) and keeps
    ``status_file`` (if given) current, replacing it atomically."""

    def __init__(self, interval: float, status_file: str | None):
        self.interval = interval
        self.status_file = Path(status_file) if status_file else None
        self.done = 0
        self.failed = 0

    @property
    def active(self) -> bool:
        return bool(self.interval) or self.status_file is not None

    @property
    def tick_interval(self) -> float | None:
        if self.interval:
            return self.interval
        return 5.0 if self.status_file is not None else None

    def report(self, status: Status) -> None:
        if self.interval:
            log.info(status.line())
        if self.status_file is not None:
            self.write_file(status)

    def write_file(self, status: Status) -> None:
        assert self.status_file is not None
        self.status_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.status_file.with_name(f".{self.status_file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"time": time.time(), **asdict(status)}, indent=1))
        os.replace(tmp, self.status_file)
