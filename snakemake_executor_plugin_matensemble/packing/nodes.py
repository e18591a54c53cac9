"""One node of the allocation: its cores and GPUs, a job's share of it, what is free.

:class:`NodeSpec` is what a backend discovers, :class:`Placement` (one
:class:`NodeShare` per node) is where a job runs, :class:`NodeState` is a
node's free cores and GPU ids; :class:`~.allocation.Allocation` holds them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..cpulist import format_cpu_list
from .resource_request import ResourceRequest


@dataclass(frozen=True)
class NodeSpec:
    """One node (Flux broker rank, or the local machine) and what it has."""

    rank: int
    name: str
    cores: tuple[int, ...]
    gpus: tuple[str, ...] = ()


@dataclass(frozen=True)
class NodeShare:
    """The part of one node given to a job: ``tasks`` tasks on these cores/GPUs."""

    rank: int
    tasks: int
    cores: tuple[int, ...]
    gpus: tuple[str, ...] = ()


@dataclass(frozen=True)
class Placement:
    """Where a job runs: one share per node it uses."""

    shares: tuple[NodeShare, ...]

    @property
    def ranks(self) -> tuple[int, ...]:
        return tuple(share.rank for share in self.shares)

    @property
    def ncores(self) -> int:
        return sum(len(share.cores) for share in self.shares)

    @property
    def ngpus(self) -> int:
        return sum(len(share.gpus) for share in self.shares)

    def describe(self) -> str:
        return "; ".join(
            f"rank {s.rank}: cores {format_cpu_list(s.cores)}"
            + (f", gpus {','.join(s.gpus)}" if s.gpus else "")
            for s in self.shares
        )


@dataclass
class NodeState:
    """Free cores and GPU ids of one node."""

    spec: NodeSpec
    free_cores: list[int] = field(default_factory=list)
    free_gpus: list[str] = field(default_factory=list)
    #: why no new job may start here (drained), or None
    drained: str | None = None
    #: the node went down: nothing runs here until it is up again
    down: bool = False

    @property
    def usable(self) -> bool:
        """Whether new jobs may be placed here (not drained, not down)."""
        return self.drained is None and not self.down

    @classmethod
    def idle(cls, spec: NodeSpec) -> NodeState:
        return cls(spec, sorted(spec.cores), list(spec.gpus))

    @property
    def is_idle(self) -> bool:
        return len(self.free_cores) == len(self.spec.cores) and len(self.free_gpus) == len(
            self.spec.gpus
        )

    def task_slots(self, request: ResourceRequest) -> int:
        """How many tasks of ``request`` fit on this node right now."""
        slots = len(self.free_cores) // request.cores_per_task
        if request.gpus_per_task:
            slots = min(slots, len(self.free_gpus) // request.gpus_per_task)
        return slots

    def share_for(self, tasks: int, request: ResourceRequest) -> NodeShare:
        """The lowest free cores/GPUs for ``tasks`` tasks (does not take them)."""
        if request.exclusive:
            return NodeShare(self.spec.rank, tasks, tuple(self.free_cores), tuple(self.free_gpus))
        ncores = tasks * request.cores_per_task
        ngpus = tasks * request.gpus_per_task
        return NodeShare(
            self.spec.rank,
            tasks,
            tuple(self.free_cores[:ncores]),
            tuple(self.free_gpus[:ngpus]),
        )

    def take(self, share: NodeShare) -> None:
        cores, gpus = set(share.cores), set(share.gpus)
        if not cores <= set(self.free_cores) or not gpus <= set(self.free_gpus):
            raise ValueError(
                f"rank {self.spec.rank}: share {share} is not free "
                f"(free cores {self.free_cores}, free gpus {self.free_gpus})"
            )
        self.free_cores = [c for c in self.free_cores if c not in cores]
        self.free_gpus = [g for g in self.free_gpus if g not in gpus]

    def give_back(self, share: NodeShare) -> None:
        self.free_cores = sorted(set(self.free_cores) | set(share.cores))
        order = {gpu: i for i, gpu in enumerate(self.spec.gpus)}
        self.free_gpus = sorted(set(self.free_gpus) | set(share.gpus), key=order.get)
