"""The backend seam: discover resources, launch on a placement, learn outcomes.

A backend is driven from one thread (the dispatcher's) except for
:meth:`Backend.wake`, which any thread may call.
"""

from __future__ import annotations

import contextlib
import enum
import os
import select
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from ..packing.nodes import NodeSpec, Placement
from ..packing.resource_request import ResourceRequest


@dataclass(frozen=True)
class LaunchSpec:
    """Everything a backend needs to run one job."""

    key: int
    #: Shell command line, run with ``shell`` in ``cwd``.
    command: str
    #: Human-readable name: rule and wildcards.
    name: str
    cwd: str
    env: Mapping[str, str]
    log_path: str
    request: ResourceRequest
    shell: str = "/bin/sh"
    #: Start the command once per task (each task on its own cores/GPUs).
    per_task: bool = False
    #: Snakemake priority of the job (backends may map it to their own).
    priority: int = 0
    #: Key/value pairs that tie the backend job to the Snakemake job and run.
    attributes: Mapping[str, object] = field(default_factory=dict)


class JobStatus(enum.Enum):
    """How one backend job ended (not :class:`.status.RunStatus`, the run's counters)."""

    SUCCESS = "success"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    LAUNCH_ERROR = "launch_error"

    @property
    def failed(self) -> bool:
        """The job ran (or tried to) and did not succeed; cancelled is not failed."""
        return self in (JobStatus.FAILED, JobStatus.TIMEOUT, JobStatus.LAUNCH_ERROR)


@dataclass(frozen=True)
class JobStarted:
    key: int
    backend_id: str
    #: when the job started, epoch seconds (for the journal, never compared
    #: with the packer's monotonic clock)
    time: float
    #: the child Flux instance the job runs in ("" for the enclosing or only one)
    instance: str = ""


@dataclass(frozen=True)
class JobFinished:
    key: int
    status: JobStatus
    #: One sentence for the user: what happened.
    reason: str
    exit_code: int | None = None
    signal: int | None = None
    #: when the job ended, epoch seconds
    time: float = 0.0
    #: ranks the backend says were lost under the job (a node failure): the
    #: dispatcher takes them out of the model at once, so that a retry does not
    #: land there before the backend's own "down" event arrives
    lost_ranks: tuple[int, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status is JobStatus.SUCCESS


class ResourceEventKind(enum.StrEnum):
    """What changed in the allocation (the journal writes the value)."""

    #: no new jobs on the ranks; running ones finish
    DRAIN = "drain"
    #: the ranks are usable again
    UNDRAIN = "undrain"
    #: the ranks are gone, with whatever ran there
    DOWN = "down"
    #: the ranks are back
    UP = "up"
    #: the allocation's end moved
    EXPIRATION = "expiration"


@dataclass(frozen=True)
class ResourceEvent:
    """A change of the allocation reported by the backend (Flux's resource journal).

    ``kind`` (a :class:`ResourceEventKind`; its value is accepted and converted)
    says what changed; an ``expiration`` event carries the new end in
    ``expiration``.
    """

    kind: ResourceEventKind
    ranks: tuple[int, ...] = ()
    reason: str = ""
    #: when it happened, epoch seconds
    time: float = 0.0
    #: kind ``expiration``: the allocation's new end in epoch seconds (None: no end)
    expiration: float | None = None

    def __post_init__(self) -> None:
        # a kind given by its value ("drain") becomes the member; an unknown one raises
        object.__setattr__(self, "kind", ResourceEventKind(self.kind))


BackendEvent = JobStarted | JobFinished | ResourceEvent


class LaunchError(Exception):
    """The backend could not start the job at all."""


class Backend(ABC):
    """Where jobs run: the local machine, or a Flux instance."""

    name: str

    @abstractmethod
    def discover(self) -> list[NodeSpec]:
        """The nodes (ranks) with the cores and GPUs jobs may use."""

    @abstractmethod
    def launch(self, spec: LaunchSpec, placement: Placement, after: int | None = None) -> str:
        """Start ``spec`` on ``placement``; return the backend's id for it.

        ``after`` (only if :attr:`supports_lookahead`): the key of a running
        job whose resources ``spec`` takes when that job ends. Raise
        :class:`LaunchError` if it cannot be started.
        """

    #: Whether :meth:`launch` accepts ``after`` (look-ahead submission).
    supports_lookahead: bool = False

    @abstractmethod
    def wait(self, timeout: float | None) -> list[BackendEvent]:
        """Block until something happened, :meth:`wake` was called, or timeout."""

    @abstractmethod
    def wake(self) -> None:
        """Make a blocked :meth:`wait` return soon (thread-safe)."""

    @abstractmethod
    def cancel_all(self) -> list[JobFinished]:
        """Stop every job this backend started and wait until they are gone."""

    @abstractmethod
    def close(self) -> None:
        """Release the backend's own resources (threads, handles)."""

    @property
    def running_count(self) -> int:
        return 0

    def expiration(self) -> float | None:
        """When the allocation ends, in epoch seconds (None: no known end).

        Read once when the run starts; later changes arrive as
        :class:`ResourceEvent` of kind ``expiration``.
        """
        return None

    def withdraw(self, key: int) -> bool:
        """Take back job ``key``, launched but not started (e.g. pinned to a
        rank that was drained since), so that it can be placed again.

        Returns True when the backend will report nothing more about it
        (no :class:`JobFinished`); False if it cannot (it started, or the
        backend cannot withdraw jobs).
        """
        return False

    #: Whether jobs of an earlier run can be re-attached (:meth:`find_running`).
    can_attach: bool = False

    #: What to tell the user when a job asks for more than this backend has,
    #: by ``cores``, ``gpus``, ``nodes`` (:class:`~..allocation.Allocation` ``hints``).
    resource_hints: Mapping[str, str] | None = None

    def settle_leftovers(self, resumable: Collection[str]) -> None:
        """Before anything is launched: adopt or stop what dead runs in this
        workdir left behind, and wait until the stopped jobs have ended.
        ``resumable``: the backend ids Snakemake's incomplete markers give to
        jobs this run needs (only those may be re-attached)."""
        return None

    def find_running(self, backend_id: str) -> RunningJob | None:
        """The still-running job ``backend_id`` of an earlier run, if any."""
        return None

    def attach(self, spec: LaunchSpec, job: RunningJob) -> None:
        """Follow ``job`` as if it had been launched for ``spec``."""
        raise NotImplementedError(f"the {self.name} backend cannot re-attach to jobs")


@dataclass(frozen=True)
class RunningJob:
    """A backend job of an earlier run that still runs (for re-attaching)."""

    backend_id: str
    ranks: tuple[int, ...]
    cores_per_rank: int
    gpus_per_rank: int
    #: when it started, epoch seconds (the packer converts it to its monotonic
    #: clock when it re-attaches: :meth:`~..packer.Packer.attach`)
    started_at: float


class WakePipe:
    """A self-pipe: :meth:`wake` from any thread makes the read end readable."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # full pipe: already awake
            os.write(self.write_fd, b"x")

    def clear(self) -> None:
        try:
            while os.read(self.read_fd, 4096):
                pass
        except BlockingIOError:
            pass

    def wait(self, timeout: float | None) -> None:
        select.select([self.read_fd], [], [], timeout)
        self.clear()

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
