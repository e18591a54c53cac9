"""The dispatcher: one thread that owns the packer and the backend.

Snakemake's scheduler thread hands jobs over with :meth:`Dispatcher.submit`;
the dispatcher thread starts the ones the packer admits, waits for backend
events (no polling loop: the backend wakes it), gives resources back as jobs
end and refills at once, MatEnsemble's adaptive strategy.

It also lives inside the allocation: jobs that cannot finish before its end
are withdrawn (reason ``deadline``); drained ranks get no new jobs (jobs
pinned there but not started are placed again); jobs on a rank that went down
fail with a reason saying so, for ``--retries`` to rerun them on the ranks
left. What the user reads of all this the listener (:mod:`.observer`) writes.

Times: the packer's clock is monotonic seconds; the ``time`` of backend events
(``JobStarted``, ``JobFinished``, ``ResourceEvent``) is epoch seconds, passed
on to the listener unchanged.
"""

from __future__ import annotations

import enum
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from .backends.base import (
    Backend,
    JobFinished,
    JobStarted,
    JobStatus,
    LaunchError,
    LaunchSpec,
    ResourceEvent,
    ResourceEventKind,
)
from .intake.naming import node_names
from .packing.packer import Packer
from .packing.queue import JobTicket

log = logging.getLogger("snakemake.logging.matensemble.dispatcher")


class Withdrawal(enum.StrEnum):
    """Why queued jobs are withdrawn (not started)."""

    #: a job failed and the run stops (no --keep-going)
    FAILURE = "failure"
    #: the run was interrupted (Ctrl-C, SIGTERM, cancel)
    INTERRUPTED = "interrupted"
    #: they cannot finish before the allocation's end
    DEADLINE = "deadline"


class DispatchListener(Protocol):
    """What the dispatcher reports (called from the dispatcher thread)."""

    def on_started(self, ticket: JobTicket, backend_id: str, time: float) -> None:
        """A job started; a job in a child Flux instance also gets ``instance=``
        (the child's name, :attr:`~.backends.base.JobStarted.instance`)."""
        ...

    def on_finished(self, ticket: JobTicket, result: JobFinished) -> bool | None:
        """Report ``result``; a true return: start no more jobs (queued ones
        are withdrawn, running ones go on)."""
        ...

    def on_withdrawn(self, tickets: list[JobTicket], reason: Withdrawal) -> None:
        """Queued ``tickets`` will not be started, for ``reason``."""
        ...

    def on_crash(self, error: BaseException, tickets: list[JobTicket]) -> None: ...

    def on_tick(self) -> None: ...

    def on_resource_event(self, event: ResourceEvent, changed: bool) -> None:
        """The allocation changed (a rank drained, undrained, down, up, or a new
        end); already applied to the packer's model (``changed``: it changed
        something there). Optional: the dispatcher calls it only if the
        listener has it."""
        ...


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
        self.packer.deadline.set_end(backend.expiration(), f"the {backend.name} backend")
        self.packer.deadline_changed()
        #: rank -> when it went down (epoch seconds), while it is down
        self.lost_ranks: dict[int, float] = {}
        self._started: set[int] = set()
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
            self._withdraw_queue(Withdrawal.INTERRUPTED if stopping else Withdrawal.FAILURE)
        if stopping:
            self._cancel_running()
            return False
        now = self.packer.clock()
        for late in self.packer.late_chained(now):  # back to the queue, to expire there
            if late.key in self.packer.running and self.backend.withdraw(late.key):
                self.packer.requeue(late)
        self._withdraw_for_deadline(self.packer.expire(now))
        self._launch(self.packer.admit(now))
        if self.backend.supports_lookahead:
            self._launch(self.packer.chain())
        timeout = None if self.packer.running or self.packer.queue else self.idle_timeout
        if self.packer.next_expiry != math.inf:  # wake up when queued jobs expire
            until = max(0.0, self.packer.next_expiry - now) + 0.01
            timeout = until if timeout is None else min(timeout, until)
        if self.tick_interval:
            now = time.monotonic()
            if now >= self._next_tick:
                self.listener.on_tick()
                self._next_tick = now + self.tick_interval
            until_tick = self._next_tick - now
            timeout = until_tick if timeout is None else min(timeout, until_tick)
        succeeded: list[tuple[JobTicket, JobFinished]] = []
        for event in self.backend.wait(timeout):
            self._handle(event, succeeded)
        if succeeded:
            # Refill the freed cores before Snakemake's own work on the finished
            # jobs (checking outputs, writing metadata: for a group, per member),
            # which runs in this thread through the listener.
            with self._lock:
                halted = self._halted or self._stopping
            if not halted:
                self._launch(self.packer.admit(self.packer.clock()))
            for ticket, result in succeeded:
                self._report(ticket, result)
        return True

    def _attach(self, tickets: list[JobTicket]) -> None:
        for ticket in tickets:
            self.packer.attach(ticket)  # in the packer's clock
            self._started.add(ticket.key)
            self.backend.attach(self.launch_spec(ticket), ticket.attach)

    def _launch(self, tickets: list[JobTicket]) -> None:
        for ticket in tickets:
            try:
                after = ticket.after.key if ticket.after is not None else None
                self.backend.launch(self.launch_spec(ticket), ticket.placement, after=after)
            except LaunchError as error:
                self._finish(
                    ticket,
                    JobFinished(ticket.key, JobStatus.LAUNCH_ERROR, str(error), time=time.time()),
                )

    def _handle(
        self,
        event: JobStarted | JobFinished | ResourceEvent,
        succeeded: list[tuple[JobTicket, JobFinished]] | None = None,
    ) -> None:
        """Apply one backend event; successes go to ``succeeded`` (reported by
        the caller after refilling), everything else is reported at once."""
        if isinstance(event, ResourceEvent):
            self._resource_event(event)
            return
        ticket = self._tickets.get(event.key)
        if ticket is None:
            return
        if isinstance(event, JobStarted):
            self._started.add(event.key)
            if event.instance:
                self.listener.on_started(
                    ticket, event.backend_id, event.time, instance=event.instance
                )
            else:
                self.listener.on_started(ticket, event.backend_id, event.time)
        else:
            self._finish(ticket, event, succeeded)

    def _finish(
        self,
        ticket: JobTicket,
        result: JobFinished,
        succeeded: list[tuple[JobTicket, JobFinished]] | None = None,
    ) -> None:
        if result.lost_ranks and not self._stopping:
            # Flux reports a job's node failure before the rank's "offline"
            # event: take the rank out now, or the retry may be placed there
            self._resource_event(
                ResourceEvent(
                    ResourceEventKind.DOWN,
                    result.lost_ranks,
                    "a job lost contact with it",
                    result.time,
                )
            )
        result = self._blame_lost_node(ticket, result)
        self.packer.finish(ticket)
        self._tickets.pop(ticket.key, None)
        self._started.discard(ticket.key)
        if succeeded is not None and result.ok:
            succeeded.append((ticket, result))
        else:
            self._report(ticket, result)

    def _report(self, ticket: JobTicket, result: JobFinished) -> None:
        if self.listener.on_finished(ticket, result):
            with self._lock:
                self._halted = True

    # -- the allocation's end ------------------------------------------------------
    def _withdraw_for_deadline(self, tickets: list[JobTicket]) -> None:
        """Withdraw ``tickets``: they cannot finish before the allocation ends
        (the listener says how many are left, when it ends and how to resume)."""
        if not tickets:
            return
        for ticket in tickets:
            self._tickets.pop(ticket.key, None)
        self.listener.on_withdrawn(tickets, Withdrawal.DEADLINE)

    # -- drained and lost ranks ---------------------------------------------------
    def _resource_event(self, event: ResourceEvent) -> None:
        """Apply ``event`` to the packer's model; the listener is told, with
        whether it changed anything (it tells the user)."""
        allocation = self.packer.allocation
        changed = True
        if event.kind is ResourceEventKind.DRAIN:
            changed = allocation.drain(event.ranks, event.reason or "drained")
            if changed:
                self._replace_unstarted(event.ranks)
        elif event.kind is ResourceEventKind.UNDRAIN:
            changed = allocation.undrain(event.ranks)
        elif event.kind is ResourceEventKind.DOWN:
            if not allocation.mark_down(event.ranks):
                return  # known already (a job's node failure said so first)
            for rank in event.ranks:
                self.lost_ranks[rank] = event.time
            self._replace_unstarted(event.ranks)
        elif event.kind is ResourceEventKind.UP:
            changed = allocation.mark_up(event.ranks)
            if changed:
                for rank in event.ranks:
                    self.lost_ranks.pop(rank, None)
        elif event.kind is ResourceEventKind.EXPIRATION:
            self.packer.deadline.set_end(event.expiration, "Flux's resource journal")
            self.packer.deadline_changed()
        notify = getattr(self.listener, "on_resource_event", None)
        if notify is not None:
            notify(event, changed)

    def _replace_unstarted(self, ranks: Sequence[int]) -> None:
        """Take back the launched jobs pinned to ``ranks`` that have not started
        (Flux would keep them waiting there) and queue them again."""
        hit = set(ranks)
        pinned = [
            t
            for t in self.packer.running.values()
            if t.placement is not None
            and hit & set(t.placement.ranks)
            and t.key not in self._started
        ]
        # successors first: a predecessor's requeue takes them along
        for ticket in sorted(pinned, key=lambda t: t.after is None):
            if ticket.key in self.packer.running and self.backend.withdraw(ticket.key):
                self.packer.requeue(ticket)
                log.info(
                    f"matensemble: job {ticket.key} had not started on drained or lost "
                    "ranks; it is placed again."
                )

    def _blame_lost_node(self, ticket: JobTicket, result: JobFinished) -> JobFinished:
        """A job that failed on a rank that went down was lost with that node."""
        if result.ok or result.lost_ranks or self._stopping or ticket.placement is None:
            return result  # (a backend that names the lost ranks said so already)
        lost = [r for r in ticket.placement.ranks if r in self.lost_ranks]
        if not lost:
            return result
        names = node_names(self.packer.allocation, lost)
        return JobFinished(
            result.key,
            JobStatus.FAILED,
            f"was lost: its node {names} went down ({result.reason}); --retries reruns "
            "it on the ranks left",
            result.exit_code,
            result.signal,
            result.time,
        )

    def _withdraw_queue(self, reason: Withdrawal) -> None:
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
