"""Starting, finding and ending all child instances of one run."""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
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
    """The children of one run and the enclosing instance they live in.

    Made by :func:`start_children` (children the run started: watched, and
    cancelled at :meth:`close`), or by :meth:`attached` for children the run
    reaches but did not start (``jobid`` None: never watched nor cancelled),
    such as a benchmark's separately started test instances.
    """

    parent_uri: str
    children: list[ChildInstance]
    carrier: Path
    _watcher: LossWatcher | None = field(default=None, repr=False)

    @classmethod
    def attached(
        cls, parent_uri: str, children: Sequence[ChildInstance], state_dir: Path | None = None
    ) -> ChildSet:
        """Children started by someone else, reached through the carrier to
        ``parent_uri`` (their ``uri``: ``ssh://matensemble-rank-R/<socket>``);
        the run neither watches nor cancels them."""
        carrier = write_carrier_script(
            Path(state_dir or tempfile.mkdtemp(prefix="matensemble-children-")), parent_uri
        )
        install_carrier(carrier)
        return cls(parent_uri, list(children), carrier)

    @property
    def started(self) -> list[ChildInstance]:
        """The children this run started (it watches and cancels only these)."""
        return [child for child in self.children if child.jobid is not None]

    def child_of_rank(self, rank: int) -> ChildInstance | None:
        """The child owning enclosing rank ``rank`` (None: no child has it)."""
        for child in self.children:
            if rank in child.ranks:
                return child
        return None

    def watch(self, on_lost: Callable[[ChildLoss], None]) -> None:
        """Call ``on_lost`` once per child that ends while watched."""
        if not self.started:
            return
        import flux

        self._watcher = LossWatcher(lambda: flux.Flux(self.parent_uri), self.started, on_lost)
        self._watcher.start()

    def close(self, handle: Any, timeout: float = 60.0) -> list[str]:
        """Stop watching, cancel every child job (their jobs end with them) and
        wait up to ``timeout`` s until all are inactive; the names of any that
        are not (logged)."""
        import flux.job

        if self._watcher is not None:
            self._watcher.stop()
        for child in self.started:
            try:
                flux.job.cancel(handle, child.jobid, "matensemble: run ended")
            except OSError as exc:  # already inactive
                log.debug(f"matensemble: child {child.name}: cancel: {exc}")
        deadline = time.monotonic() + timeout
        pending = self.started
        while pending and time.monotonic() < deadline:
            pending = [c for c in pending if not _inactive(handle, c.jobid)]
            if pending:
                time.sleep(CLOSE_POLL_S)
        for child in pending:
            log.warning(
                f"matensemble: child instance {child.name} (job {child.jobid}) still active "
                "after cancel"
            )
        return [child.name for child in pending]


def start_children(
    handle: Any,
    count: int,
    scheduler: Scheduler | Literal["auto"] = "auto",
    ranks: Sequence[int] | None = None,
    state_dir: Path | None = None,
    timeout: float = 120.0,
    attributes: Mapping[str, Any] | None = None,
) -> ChildSet:
    """Start ``count`` children over ``ranks`` (default: every rank of the
    instance ``handle`` is connected to) and wait until each is ready.
    ``scheduler="auto"``: sched-simple, or Fluxion where the nodes have GPUs.
    ``attributes``: the run's owner identity, put in each child job's
    ``user.snakemake`` attribute (with ``child``: its name), so that a later
    run finds the children a dead run left."""
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
    jobids = submit_children(handle, plans, duration, attributes)
    children: list[ChildInstance] = []
    try:
        for plan, jobid in zip(plans, jobids, strict=True):
            children.append(wait_child(handle, plan.name, jobid, plan.ranks, timeout))
    except Exception:
        for jobid in jobids:
            with contextlib.suppress(OSError):
                flux.job.cancel(handle, jobid, "matensemble: a child did not start")
        raise
    log.debug(
        f"matensemble: {len(children)} child instances ({scheduler}) over "
        f"{sum(len(c.ranks) for c in children)} nodes are up"
    )
    return ChildSet(parent_uri, children, carrier)
