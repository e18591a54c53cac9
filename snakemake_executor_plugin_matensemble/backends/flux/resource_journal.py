"""Following Flux's resource journal (drained, lost and returning ranks, a new
expiration) in a thread of its own, with its own Flux handle."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from ..base import BackendEvent
from .resources import resource_event

log = logging.getLogger("snakemake.logging.matensemble.flux")


def follow_resource_journal(
    flux: Any, since: float, stop: threading.Event, push: Callable[[BackendEvent], None]
) -> threading.Thread | None:
    """Start a daemon thread that pushes every resource event after epoch
    ``since`` until ``stop`` is set; None if this flux-python has no journal."""
    try:
        from flux.resource.journal import ResourceJournalConsumer
    except ImportError:
        log.info(
            "matensemble: this flux-python has no resource journal; drained or "
            "lost ranks are not followed."
        )
        return None

    def follow() -> None:
        try:
            handle = flux.Flux()
            consumer = ResourceJournalConsumer(handle, since=since).start()
            while not stop.is_set():
                try:
                    entry = consumer.poll(timeout=0.5)
                except TimeoutError:
                    continue
                if entry is None:
                    return
                if entry.is_empty():
                    continue
                event = resource_event(entry.name, entry.context, entry.timestamp)
                if event is not None:
                    push(event)
        except Exception as error:  # never let the thread die silently
            if not stop.is_set():
                log.warning(f"matensemble: stopped following Flux's resource journal: {error}")

    thread = threading.Thread(target=follow, name="matensemble-flux-resources", daemon=True)
    thread.start()
    return thread
