"""The dispatcher: one thread that owns the packer and the backend.

Snakemake's scheduler thread hands jobs over with :meth:`Dispatcher.submit`;
the dispatcher thread starts the ones the packer admits, waits for backend
events (no polling loop: the backend wakes it), gives resources back as jobs
end and refills at once, MatEnsemble's adaptive strategy.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from .backends.base import (
    Backend,
    JobFinished,
    JobStarted,
    LaunchError,
    LaunchSpec,
    Status,
)
from .packer import JobTicket, Packer

log = logging.getLogger("snakemake.logging.matensemble.dispatcher")

#: Why queued jobs are withdrawn: a job failed (no --keep-going), the run was
#: interrupted (Ctrl-C, SIGTERM, cancel), or they cannot finish before the
#: allocation's end.
WITHDRAWN_REASONS = ("failure", "interrupted", "deadline")


class DispatchListener(Protocol):
    """What the dispatcher reports (called from the dispatcher thread)."""

    def on_started(self, ticket: JobTicket, backend_id: str, time: float) -> None: ...

    def on_finished(self, ticket: JobTicket, result: JobFinished) -> None: ...

    def on_withdrawn(self, tickets: list[JobTicket], reason: str) -> None:
        """Queued ``tickets`` will not be started; ``reason`` is one of
        :data:`WITHDRAWN_REASONS`."""
        ...

    def on_crash(self, error: BaseException, tickets: list[JobTicket]) -> None: ...

    def on_tick(self) -> None: ...


class Dispatcher:
    """Moves jobs from Snakemake through the packer onto the backend."""

    def __init__(
        self,
        packer: Packer,
        backend: Backend,
        listener: DispatchListener,
        launch_spec: Callable[[JobTicket], LaunchSpec],
        idle_timeout: float = 5.0,
        tick_interval: float | None = None,
    ):
        self.packer = packer
        self.backend = backend
        self.listener = listener
        self.launch_spec = launch_spec
        self.idle_timeout = idle_timeout
        self.tick_interval = tick_interval
        self._next_tick = time.monotonic() + (tick_interval or 0)
        #: CPU seconds this thread has used (for the run's cost figures)
        self.cpu_s = 0.0
        self._lock = threading.Lock()
        self._inbox: list[JobTicket] = []
        self._halted = False
        self._stopping = False
        self._tickets: dict[int, JobTicket] = {}
        self._thread = threading.Thread(
            target=self._run, name="matensemble-dispatcher", daemon=True
        )

    # -- called from other threads ---------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def submit(self, tickets: list[JobTicket]) -> None:
        with self._lock:
            self._inbox.extend(tickets)
        self.backend.wake()

    def halt(self) -> None:
        """Start no more jobs; queued ones are withdrawn (running ones go on)."""
        with self._lock:
            self._halted = True
        self.backend.wake()

    def stop(self, timeout: float | None = None) -> None:
        """Withdraw the queue, cancel running jobs, end the thread."""
        with self._lock:
            self._stopping = True
        self.backend.wake()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # -- the dispatcher thread --------------------------------------------------
    def _run(self) -> None:
        try:
            while self._step():
                self.cpu_s = time.thread_time()
        except BaseException as error:  # report, never die silently
            log.exception(f"matensemble: the dispatcher failed: {error}")
            self._crash(error)
        finally:
            self.backend.close()

    def _step(self) -> bool:
        with self._lock:
            new, self._inbox = self._inbox, []
            halted, stopping = self._halted, self._stopping
        for ticket in new:
            self._tickets[ticket.key] = ticket
        self._attach([t for t in new if t.attach is not None])
        self.packer.enqueue([t for t in new if t.attach is None])
        if halted or stopping:
            self._withdraw_queue("interrupted" if stopping else "failure")
        if stopping:
            self._cancel_running()
            return False
        self._launch(self.packer.admit())
        if self.backend.supports_lookahead:
            self._launch(self.packer.chain())
        timeout = None if self.packer.running or self.packer.queue else self.idle_timeout
        if self.tick_interval:
            now = time.monotonic()
            if now >= self._next_tick:
                self.listener.on_tick()
                self._next_tick = now + self.tick_interval
            until_tick = self._next_tick - now
            timeout = until_tick if timeout is None else min(timeout, until_tick)
        for event in self.backend.wait(timeout):
            self._handle(event)
        return True

    def _attach(self, tickets: list[JobTicket]) -> None:
        for ticket in tickets:
            running = ticket.attach
            placement = self.packer.allocation.claim(
                list(running.ranks), running.cores_per_rank, running.gpus_per_rank
            )
            self.packer.adopt(ticket, placement, running.started_at)
            self.backend.attach(self.launch_spec(ticket), running)

    def _launch(self, tickets: list[JobTicket]) -> None:
        for ticket in tickets:
            try:
                after = ticket.after.key if ticket.after is not None else None
                self.backend.launch(self.launch_spec(ticket), ticket.placement, after=after)
            except LaunchError as error:
                self._finish(
                    ticket,
                    JobFinished(ticket.key, Status.LAUNCH_ERROR, str(error), time=time.time()),
                )

    def _handle(self, event: JobStarted | JobFinished) -> None:
        ticket = self._tickets.get(event.key)
        if ticket is None:
            return
        if isinstance(event, JobStarted):
            self.listener.on_started(ticket, event.backend_id, event.time)
        else:
            self._finish(ticket, event)

    def _finish(self, ticket: JobTicket, result: JobFinished) -> None:
        self.packer.finish(ticket)
        self._tickets.pop(ticket.key, None)
        self.listener.on_finished(ticket, result)

    def _withdraw_queue(self, reason: str) -> None:
        withdrawn = self.packer.withdraw_queued()
        if withdrawn:
            for ticket in withdrawn:
                self._tickets.pop(ticket.key, None)
            self.listener.on_withdrawn(withdrawn, reason)

    def _cancel_running(self) -> None:
        if not self.packer.running:
            return
        log.info(f"matensemble: cancelling {len(self.packer.running)} running job(s).")
        for result in self.backend.cancel_all():
            ticket = self._tickets.get(result.key)
            if ticket is not None:
                self._finish(ticket, result)

    def _crash(self, error: BaseException) -> None:
        tickets = list(self._tickets.values())
        try:
            self.backend.cancel_all()
        except Exception:
            log.exception("matensemble: could not cancel the running jobs after the failure.")
        self._tickets.clear()
        self.listener.on_crash(error, tickets)
