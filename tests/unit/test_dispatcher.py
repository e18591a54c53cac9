"""The dispatcher with a fake backend: start, finish, refill, halt, stop, crash,
re-attach in the packer's clock, the allocation's end, drained and lost ranks."""

import queue
import threading
import time

import pytest

from snakemake_executor_plugin_matensemble.backends.base import (
    Backend,
    JobFinished,
    JobStarted,
    JobStatus,
    LaunchError,
    LaunchSpec,
    ResourceEvent,
    RunningJob,
)
from snakemake_executor_plugin_matensemble.dispatcher import Dispatcher, Withdrawal
from snakemake_executor_plugin_matensemble.packing.allocation import Allocation
from snakemake_executor_plugin_matensemble.packing.deadline import DeadlineGuard
from snakemake_executor_plugin_matensemble.packing.nodes import NodeSpec
from snakemake_executor_plugin_matensemble.packing.packer import Packer
from snakemake_executor_plugin_matensemble.packing.policies import BackfillPolicy
from snakemake_executor_plugin_matensemble.packing.queue import JobTicket
from snakemake_executor_plugin_matensemble.packing.resource_request import ResourceRequest

from .packing import unusable


class FakeBackend(Backend):
    """Jobs "run" until the test finishes them; events go through a queue."""

    name = "fake"
    supports_lookahead = False

    def __init__(self, expiration=None, fail_launch=(), withdrawable=True):
        self.events = queue.SimpleQueue()
        self.launched: list[tuple[int, tuple[int, ...]]] = []
        self.attached: list[int] = []
        self.withdrawn: list[int] = []
        self.cancelled = False
        self.closed = False
        self._expiration = expiration
        self.fail_launch = set(fail_launch)
        self.withdrawable = withdrawable
        self.started: set[int] = set()

    def discover(self):
        return []

    def expiration(self):
        return self._expiration

    def launch(self, spec, placement, after=None):
        if spec.key in self.fail_launch:
            raise LaunchError("refused")
        self.launched.append((spec.key, placement.ranks))
        return f"fake-{spec.key}"

    def attach(self, spec, job):
        self.attached.append(spec.key)

    def start(self, key):
        self.started.add(key)
        self.events.put(JobStarted(key, f"fake-{key}", time.time()))

    def finish(self, key, status=JobStatus.SUCCESS, reason="done"):
        self.events.put(JobFinished(key, status, reason, 0, None, time.time()))

    def withdraw(self, key):
        if not self.withdrawable or key in self.started:
            return False
        self.withdrawn.append(key)
        return True

    def wait(self, timeout):
        events = []
        try:
            events.append(self.events.get(timeout=min(timeout, 0.05) if timeout else 0.05))
            while True:
                events.append(self.events.get_nowait())
        except queue.Empty:
            pass
        return [event for event in events if event is not None]

    def wake(self):
        self.events.put(None)

    def cancel_all(self):
        self.cancelled = True
        return []

    def close(self):
        self.closed = True


class Listener:
    def __init__(self):
        self.started, self.finished, self.withdrawn, self.crashed = [], [], [], []
        self.resource_events = []
        self.lock = threading.Lock()

    def on_started(self, ticket, backend_id, time):
        self.started.append(ticket.key)

    def on_finished(self, ticket, result):
        self.finished.append((ticket.key, result))

    def on_withdrawn(self, tickets, reason):
        assert isinstance(reason, Withdrawal)
        self.withdrawn.append(([t.key for t in tickets], reason))

    def on_crash(self, error, tickets):
        self.crashed.append((error, [t.key for t in tickets]))

    def on_tick(self):
        pass

    def on_resource_event(self, event, changed):
        self.resource_events.append(event)


def spec_for(ticket):
    return LaunchSpec(ticket.key, "true", "job", "/", {}, "/dev/null", ticket.request)


def make(cores=2, nodes=1, backend=None, listener=None, deadline=None, reserve_after=60.0):
    backend = backend or FakeBackend()
    allocation = Allocation([NodeSpec(r, f"n{r}", tuple(range(cores))) for r in range(nodes)])
    packer = Packer(allocation, BackfillPolicy(reserve_after), deadline=deadline)
    listener = listener or Listener()
    dispatcher = Dispatcher(packer, backend, listener, spec_for, idle_timeout=0.05)
    return dispatcher, backend, listener


_keys = iter(range(1, 10**9))


def ticket(cores=1, walltime=None, **kwargs):
    request = ResourceRequest(cores_per_task=cores, walltime_s=walltime)
    return JobTicket(next(_keys), request, **kwargs)


def until(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


@pytest.fixture
def run():
    dispatchers = []

    def start(*args, **kwargs):
        dispatcher, backend, listener = make(*args, **kwargs)
        dispatcher.start()
        dispatchers.append(dispatcher)
        return dispatcher, backend, listener

    yield start
    for dispatcher in dispatchers:
        dispatcher.stop(timeout=5)


def keys(launched):
    return [key for key, _ in launched]


def test_start_finish_and_refill(run):
    dispatcher, backend, listener = run(cores=2)
    tickets = [ticket() for _ in range(3)]
    dispatcher.submit(tickets)
    assert until(lambda: len(backend.launched) == 2)
    backend.start(tickets[0].key)
    backend.finish(tickets[0].key)
    assert until(lambda: len(backend.launched) == 3)  # refilled at once
    assert keys(backend.launched) == [t.key for t in tickets]
    assert until(lambda: listener.started == [tickets[0].key])
    assert listener.finished[0][1].ok


def test_a_launch_error_is_a_failed_result_and_frees_the_cores(run):
    backend = FakeBackend()
    bad, good = ticket(cores=2), ticket(cores=2)
    backend.fail_launch.add(bad.key)
    dispatcher, backend, listener = run(cores=2, backend=backend)
    dispatcher.submit([bad, good])
    assert until(lambda: keys(backend.launched) == [good.key])
    assert listener.finished[0][0] == bad.key
    assert listener.finished[0][1].status is JobStatus.LAUNCH_ERROR


def test_halt_withdraws_the_queue_as_failure_and_running_jobs_go_on(run):
    dispatcher, backend, listener = run(cores=1)
    first, second, third = ticket(), ticket(), ticket()
    dispatcher.submit([first, second, third])
    assert until(lambda: len(backend.launched) == 1)
    dispatcher.halt()
    assert until(lambda: listener.withdrawn == [([second.key, third.key], "failure")])
    backend.finish(first.key)
    assert until(lambda: len(listener.finished) == 1)
    assert not backend.cancelled


def test_stop_withdraws_as_interrupted_and_cancels_the_running_jobs():
    dispatcher, backend, listener = make(cores=1)
    dispatcher.start()
    first, second = ticket(), ticket()
    dispatcher.submit([first, second])
    assert until(lambda: len(backend.launched) == 1)
    dispatcher.stop(timeout=5)
    assert listener.withdrawn == [([second.key], "interrupted")]
    assert backend.cancelled
    assert backend.closed
    assert not dispatcher.alive


def test_a_crash_is_reported_with_every_ticket_and_cancels():
    class Broken(FakeBackend):
        def launch(self, spec, placement, after=None):
            raise RuntimeError("backend bug")

    dispatcher, backend, listener = make(cores=1, backend=Broken())
    dispatcher.start()
    doomed = ticket()
    dispatcher.submit([doomed])
    assert until(lambda: listener.crashed)
    error, tickets = listener.crashed[0]
    assert isinstance(error, RuntimeError)
    assert tickets == [doomed.key]
    assert backend.cancelled
    assert until(lambda: not dispatcher.alive)


def test_a_reattached_job_keeps_the_starvation_guard_on(run):
    """A job re-attached after a restart started (epoch) 10 s ago. Before the
    fix its start was kept in epoch seconds, so its expected end lay decades
    after every monotonic time, and every job could backfill past a starved one."""
    dispatcher, backend, _ = run(cores=4, reserve_after=0)
    running = ticket(cores=2, walltime=60)
    running.attach = RunningJob("f1", (0,), 2, 0, started_at=time.time() - 10)
    dispatcher.submit([running])
    assert until(lambda: backend.attached == [running.key])
    assert abs(running.started_at - (time.monotonic() - 10)) < 2
    big, slow = ticket(cores=4, walltime=10), ticket(cores=1, walltime=600)
    dispatcher.submit([big, slow])
    time.sleep(0.3)
    assert backend.launched == []  # slow would delay big, which waits for 50 s


# -- the allocation's end -------------------------------------------------------------
def test_jobs_that_cannot_finish_are_withdrawn(run):
    backend = FakeBackend(expiration=time.time() + 100)
    dispatcher, backend, listener = run(cores=4, backend=backend)
    fits, too_long, unknown = ticket(walltime=50), ticket(walltime=90), ticket()
    dispatcher.submit([fits, too_long, unknown])
    assert until(lambda: listener.withdrawn == [([too_long.key], "deadline")])
    assert until(lambda: sorted(keys(backend.launched)) == sorted([fits.key, unknown.key]))


def test_the_deadline_setting_wins_over_the_backend():
    guard = DeadlineGuard(override=time.time() + 40, margin=0)
    dispatcher, _, _ = make(
        cores=1, backend=FakeBackend(expiration=time.time() + 10**6), deadline=guard
    )
    deadline = dispatcher.packer.deadline
    assert 39 < deadline.end - deadline.clock() <= 40


def test_queued_jobs_expire_while_nothing_happens(run):
    """No event arrives, yet jobs are withdrawn when their time runs out."""
    backend = FakeBackend(expiration=time.time() + 31.5)
    dispatcher, backend, listener = run(cores=1, backend=backend)
    first, second = ticket(walltime=1), ticket(walltime=1)
    dispatcher.submit([first, second])  # second waits for the only core
    assert until(lambda: listener.withdrawn == [([second.key], "deadline")], timeout=5)


# -- drained and lost ranks -------------------------------------------------------------
def test_a_drained_rank_gets_no_new_jobs_and_unstarted_ones_move(run):
    dispatcher, backend, listener = run(cores=1, nodes=2)
    a, b, c = ticket(), ticket(), ticket()
    dispatcher.submit([a, b, c])
    assert until(lambda: len(backend.launched) == 2)
    on_rank = dict(backend.launched)
    started = next(k for k, r in on_rank.items() if r == (0,))
    pinned = next(k for k, r in on_rank.items() if r == (1,))
    backend.start(started)
    backend.events.put(ResourceEvent("drain", (1,), "admin", time.time()))
    assert until(lambda: backend.withdrawn == [pinned])
    backend.finish(started)
    # the rank-0 core is given to the jobs in line, never rank 1
    assert until(lambda: len(backend.launched) == 3)
    assert all(r == (0,) for _, r in backend.launched[2:])
    assert listener.resource_events[0].kind == "drain"
    backend.events.put(ResourceEvent("undrain", (1,), "", time.time()))
    assert until(lambda: (1,) in [r for _, r in backend.launched[2:]])


def test_jobs_on_a_lost_rank_fail_saying_so(run):
    dispatcher, backend, listener = run(cores=1, nodes=2)
    a, b = ticket(), ticket()
    dispatcher.submit([a, b])
    assert until(lambda: len(backend.launched) == 2)
    for key, _ in backend.launched:
        backend.start(key)
    lost = next(k for k, r in backend.launched if r == (1,))
    backend.events.put(ResourceEvent("down", (1,), "", time.time()))
    backend.finish(lost, JobStatus.FAILED, "(Flux job f1) was killed by signal 9")
    assert until(lambda: listener.finished)
    key, result = listener.finished[0]
    assert key == lost
    assert result.status is JobStatus.FAILED
    assert "was lost: its node n1 (rank 1) went down" in result.reason
    assert unusable(dispatcher.packer.allocation) == {1: "down"}


def test_a_node_failure_takes_the_rank_out_before_the_retry_is_placed(run):
    """Flux reports a job's node failure before the rank's offline event: the
    rank must be out of the model already when Snakemake's retry arrives."""
    dispatcher, backend, listener = run(cores=1, nodes=2)
    a, b = ticket(), ticket()
    dispatcher.submit([a, b])
    assert until(lambda: len(backend.launched) == 2)
    for key, _ in backend.launched:
        backend.start(key)
    lost = next(k for k, r in backend.launched if r == (1,))
    other = next(k for k, r in backend.launched if r == (0,))
    backend.events.put(
        JobFinished(
            lost, JobStatus.FAILED, "was lost with its node", time=time.time(), lost_ranks=(1,)
        )
    )
    assert until(lambda: listener.finished)
    assert unusable(dispatcher.packer.allocation) == {1: "down"}
    assert [e.kind for e in listener.resource_events] == ["down"]
    retry = ticket()
    dispatcher.submit([retry])
    backend.finish(other)
    assert until(lambda: retry.key in keys(backend.launched))
    assert dict(backend.launched)[retry.key] == (0,)
    backend.events.put(ResourceEvent("down", (1,), "", time.time()))  # Flux's own, later
    time.sleep(0.2)
    assert [e.kind for e in listener.resource_events] == ["down"]


def test_a_chained_job_that_would_start_too_late_is_withdrawn():
    """Look-ahead: a job chained behind one of unknown runtime is taken back
    from the backend and withdrawn when its latest start passes."""

    class Lookahead(FakeBackend):
        supports_lookahead = True

    backend = Lookahead(expiration=time.time() + 31.5)  # margin 30: 1.5 s to start
    dispatcher, backend, listener = make(cores=1, backend=backend)
    dispatcher.start()
    try:
        first, chained = ticket(), ticket()
        dispatcher.submit([first, chained])
        assert until(lambda: keys(backend.launched) == [first.key, chained.key])
        backend.start(first.key)
        assert until(lambda: listener.withdrawn == [([chained.key], "deadline")], timeout=5)
        assert backend.withdrawn == [chained.key]
    finally:
        dispatcher.stop(timeout=5)


def test_resource_event_kinds_are_typed_and_checked():
    from snakemake_executor_plugin_matensemble.backends.base import ResourceEventKind

    event = ResourceEvent("drain", (1,), "admin", 1.0)  # a backend may give the value
    assert event.kind is ResourceEventKind.DRAIN
    with pytest.raises(ValueError, match="drained"):
        ResourceEvent("drained", (1,))
