"""Starting, finding and ending all child instances of one run."""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .child import ChildInstance, wait_child
from .groups import split_ranks
from .launch import (
    ChildPlan,
    Scheduler,
    choose_scheduler,
    enclosing_rset,
    expiration_of,
    remaining_seconds,
    submit_children,
)
from .relay import install_carrier, write_carrier_script
from .watch import ChildLoss, LossWatcher

log = logging.getLogger("snakemake.logging.matensemble.flux")
CLOSE_POLL_S = 0.1


def _inactive(handle: Any, jobid: int) -> bool:
    import flux.job

    return flux.job.get_job(handle, jobid)["state"] == "INACTIVE"


def enclosing_ranks(handle: Any) -> list[int]:
    """All broker ranks of the enclosing instance (its nodes)."""
    return list(range(int(handle.attr_get("size"))))


@dataclass
class ChildSet:
    """The children of one run and the enclosing instance they live in."""

    parent_uri: str
    children: list[ChildInstance]
    carrier: Path
    _watcher: LossWatcher | None = field(default=None, repr=False)

    def child_of_rank(self, rank: int) -> ChildInstance | None:
        """The child owning enclosing rank ``rank`` (None: no child has it)."""
        for child in self.children:
            if rank in child.ranks:
                return child
        return None

    def watch(self, on_lost: Callable[[ChildLoss], None]) -> None:
        """Call ``on_lost`` once per child that ends while watched."""
        import flux

        self._watcher = LossWatcher(lambda: flux.Flux(self.parent_uri), self.children, on_lost)
        self._watcher.start()

    def close(self, handle: Any, timeout: float = 60.0) -> list[str]:
        """Stop watching, cancel every child job (their jobs end with them) and
        wait up to ``timeout`` s until all are inactive; the names of any that
        are not (logged)."""
        import flux.job

        if self._watcher is not None:
            self._watcher.stop()
        for child in self.children:
            try:
                flux.job.cancel(handle, child.jobid, "matensemble: run ended")
            except OSError as exc:  # already inactive
                log.debug("child %s: cancel: %s", child.name, exc)
        deadline = time.monotonic() + timeout
        pending = list(self.children)
        while pending and time.monotonic() < deadline:
            pending = [c for c in pending if not _inactive(handle, c.jobid)]
            if pending:
                time.sleep(CLOSE_POLL_S)
        for child in pending:
            log.warning(
                "child instance %s (job %s) still active after cancel", child.name, child.jobid
            )
        return [child.name for child in pending]


def start_children(
    handle: Any,
    count: int,
    scheduler: Scheduler | Literal["auto"] = "auto",
    ranks: Sequence[int] | None = None,
    state_dir: Path | None = None,
    timeout: float = 120.0,
) -> ChildSet:
    """Start ``count`` children over ``ranks`` (default: every rank of the
    instance ``handle`` is connected to) and wait until each is ready.
    ``scheduler="auto"``: sched-simple, or Fluxion where the nodes have GPUs."""
    import flux.job

    parent_uri = handle.attr_get("local-uri")
    rset = enclosing_rset(handle)
    if scheduler == "auto":
        scheduler = choose_scheduler(rset)
    groups = split_ranks(list(ranks) if ranks is not None else enclosing_ranks(handle), count)
    plans = [ChildPlan(f"c{index}", group, scheduler) for index, group in enumerate(groups)]
    carrier = write_carrier_script(
        Path(state_dir or tempfile.mkdtemp(prefix="matensemble-children-")), parent_uri
    )
    install_carrier(carrier)
    duration = remaining_seconds(expiration_of(rset))
    jobids = submit_children(handle, plans, duration)
    children: list[ChildInstance] = []
    try:
        for plan, jobid in zip(plans, jobids, strict=True):
            children.append(wait_child(handle, plan.name, jobid, plan.ranks, timeout))
    except Exception:
        for jobid in jobids:
            with contextlib.suppress(OSError):
                flux.job.cancel(handle, jobid, "matensemble: a child did not start")
        raise
    log.info(
        "started %d child instances (%s) over %d nodes",
        len(children),
        scheduler,
        sum(len(c.ranks) for c in children),
    )
    return ChildSet(parent_uri, children, carrier)
