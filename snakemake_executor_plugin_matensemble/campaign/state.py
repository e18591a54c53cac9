"""A campaign's state: ``state.json`` in its directory, read and changed only
under ``state.lock`` (``flock``), so that no allocation is queued twice and
none is left queued when the campaign ends."""

from __future__ import annotations

import contextlib
import fcntl
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..observing.run_end import write_atomically

CAMPAIGNS = Path(".snakemake") / "matensemble" / "campaign"
STATE = "state.json"


@dataclass
class Allocation:
    """One allocation of the campaign: its scheduler id, and what it did.

    ``state``: ``queued``, ``running``, ``ended`` or ``cancelled``; ``reason``:
    the run-end reason of its Snakemake run (or why it never ran)."""

    id: str
    number: int
    state: str = "queued"
    queued: float = field(default_factory=time.time)
    started: float | None = None
    ended: float | None = None
    reason: str | None = None
    done: int | None = None
    left: int | None = None
    journal: str | None = None


@dataclass
class Campaign:
    """``status``: ``active``, ``complete``, ``stopped`` (the chain stopped by
    itself: ``reason`` and ``message`` say why) or ``cancelled``."""

    id: str
    scheduler: str
    script: str
    workdir: str
    nodes: int
    walltime_s: float
    max_allocations: int
    flux_uri: str | None = None
    #: Snakemake's working directory (``-d``), where it differs from ``workdir``
    snakemake_dir: str | None = None
    status: str = "active"
    reason: str | None = None
    message: str | None = None
    allocations: list[Allocation] = field(default_factory=list)

    def find(self, allocation: str) -> Allocation | None:
        return next((a for a in self.allocations if a.id == allocation), None)

    def waiting(self) -> list[Allocation]:
        """Allocations queued and not started."""
        return [a for a in self.allocations if a.state == "queued"]

    def started(self) -> list[Allocation]:
        return [a for a in self.allocations if a.started is not None]

    def add(self, allocation: str) -> Allocation:
        entry = Allocation(allocation, len(self.allocations) + 1)
        self.allocations.append(entry)
        return entry

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Campaign:
        allocations = [Allocation(**a) for a in data.pop("allocations", [])]
        return cls(**data, allocations=allocations)


def load(directory: str | Path) -> Campaign:
    return Campaign.from_json(json.loads((Path(directory) / STATE).read_text(encoding="utf-8")))


def save(directory: str | Path, campaign: Campaign) -> None:
    write_atomically(Path(directory) / STATE, campaign.to_json())


@contextlib.contextmanager
def locked(directory: str | Path) -> Iterator[Campaign]:
    """The campaign, under its lock; saved when the block ends without error."""
    with open(Path(directory) / "state.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            campaign = load(directory)
            yield campaign
            save(directory, campaign)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def newest(root: str | Path = CAMPAIGNS) -> Path | None:
    """The newest campaign directory under ``root`` (ids start with the time)."""
    found = sorted(p.parent for p in Path(root).glob(f"*/{STATE}"))
    return found[-1] if found else None
