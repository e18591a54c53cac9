"""Noticing that a child instance is gone, from the enclosing instance.

A child is a job of the enclosing instance; when any of its brokers dies the
job ends (:mod:`.keeper`), and so does the child when its time is up or it
is cancelled. :class:`LossWatcher` follows each child job's eventlog on its own
handle and thread and reports the first exception or finish of each, once,
as a :class:`ChildLoss`: the router fails that child's running jobs once and
removes its nodes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .child import ChildInstance

log = logging.getLogger("snakemake.logging.matensemble.flux")
STOP_POLL_S = 0.2


@dataclass(frozen=True)
class ChildLoss:
    """A child that ended: which one, and why (from the enclosing instance)."""

    name: str
    jobid: int
    ranks: tuple[int, ...]
    reason: str


def loss_reason(event_name: str, context: dict[str, Any]) -> str | None:
    """Why a child job's eventlog event ends it, or None if it does not."""
    if event_name == "exception" and int(context.get("severity", 0)) == 0:
        return f"exception {context.get('type', '?')}: {context.get('note', '')}".strip()
    if event_name == "finish":
        status = int(context.get("status", 0))
        if status & 0x7F:
            return f"its brokers ended by signal {status & 0x7F}"
        return f"its brokers exited with status {status >> 8}"
    return None


class LossWatcher:
    """Reports each watched child's end once, through ``on_lost`` (called on the
    watcher's thread)."""

    def __init__(
        self,
        open_parent: Callable[[], Any],
        children: Iterable[ChildInstance],
        on_lost: Callable[[ChildLoss], None],
    ) -> None:
        self._open_parent = open_parent
        self._children = {child.jobid: child for child in children}
        self._on_lost = on_lost
        self._stop = threading.Event()
        self._reported: set[int] = set()
        self._thread = threading.Thread(
            target=self._run, name="matensemble-child-loss", daemon=True
        )
        self._ready = threading.Event()

    def start(self) -> LossWatcher:
        self._thread.start()
        self._ready.wait(timeout=30)
        return self

    def stop(self) -> None:
        """Stop watching (before children are shut down on purpose)."""
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        import flux.job

        handle = self._open_parent()
        for jobid in self._children:
            future = flux.job.event_watch_async(handle, jobid)
            future.then(self._on_event, jobid)
        timer = handle.timer_watcher_create(STOP_POLL_S, self._check_stop, repeat=STOP_POLL_S)
        timer.start()
        self._ready.set()
        handle.reactor_run()

    def _check_stop(self, handle: Any, *_: Any) -> None:
        if self._stop.is_set():
            handle.reactor_stop()

    def _on_event(self, future: Any, jobid: int) -> None:
        try:
            event = future.get_event()
        except OSError as exc:
            self._report(jobid, f"its eventlog could not be followed ({exc})")
            return
        if event is None:
            return
        reason = loss_reason(event.name, event.context)
        if reason is not None:
            self._report(jobid, reason)

    def _report(self, jobid: int, reason: str) -> None:
        if jobid in self._reported or self._stop.is_set():
            return
        self._reported.add(jobid)
        child = self._children[jobid]
        loss = ChildLoss(child.name, jobid, child.ranks, reason)
        log.info(f"matensemble: child instance {child.name} ended: {reason}")
        try:
            self._on_lost(loss)
        except Exception:  # the watcher must survive a failing callback
            log.exception(f"matensemble: child loss callback failed for {child.name}")
