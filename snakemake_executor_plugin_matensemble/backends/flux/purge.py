"""Purging this run's successful inactive Flux jobs (housekeeping)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

log = logging.getLogger("snakemake.logging.matensemble.flux")

#: Inactive jobs purged per round (one pipelined ``job-manager.purge-id`` RPC each).
PURGE_BATCH = 200


class PurgeMixin:
    """Part of :class:`~.instance.FluxInstance` (its state lives there)."""

    flux: Any
    options: Any

    def _purge(self) -> None:
        """Purge this run's oldest successful inactive jobs beyond the newest
        ``keep_inactive`` (failed ones are kept for inspection), so that Flux's
        throughput does not fall as inactive jobs pile up."""
        keep = self.options.keep_inactive
        if keep is None or len(self._inactive) < keep + PURGE_BATCH:
            return
        with self._lock:
            batch = [self._inactive.popleft() for _ in range(len(self._inactive) - keep)]
        try:
            if self._purge_handle is None:
                self._purge_handle = self.flux.Flux()
            futures = [
                self._purge_handle.rpc("job-manager.purge-id", {"id": jobid, "force": 1})
                for jobid in batch
            ]
            for future in futures:
                try:
                    future.get()
                    self.purged += 1
                except OSError as error:  # already purged (e.g. by flux's own limits)
                    log.debug(f"matensemble: purge: {error}")
        except Exception as error:  # purging is housekeeping: never fail the run
            log.warning(f"matensemble: could not purge inactive Flux jobs: {error}")
            self.options = dataclasses.replace(self.options, keep_inactive=None)
            return
        log.debug(f"matensemble: purged {len(batch)} inactive Flux job(s) of this run.")
