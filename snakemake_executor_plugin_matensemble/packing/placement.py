"""Where a request fits in the allocation: the search over its free-capacity index.

Best fit on one node, else tasks spread over as few nodes as possible; whole
idle nodes for exclusive requests; and, for a request that can never fit even
the idle allocation, which resource to blame. A part of
:class:`~.allocation.Allocation`, which holds the nodes and their index.
"""

from __future__ import annotations

from .capacity import CapacityIndex
from .nodes import Placement
from .resource_request import ResourceRequest


class PlacementSearch:
    """Placement over an :class:`~.allocation.Allocation`'s capacity index."""

    def place(self, request: ResourceRequest) -> Placement | None:
        """Where ``request`` would run now, or None if it does not fit now."""
        if request.exclusive:
            return self._fit_nodes(self._idle, _split(request.tasks, request.nodes or 1), request)
        if request.nodes is not None:
            return self._fit_nodes(self._usable, _split(request.tasks, request.nodes), request)
        return self._place_anywhere(request)

    def _place_anywhere(self, request: ResourceRequest) -> Placement | None:
        # Best fit: the node that fits all tasks with the fewest cores left over,
        # which keeps whole nodes free for big jobs.
        tasks = request.tasks
        best = self._usable.best(tasks * request.cores_per_task, tasks * request.gpus_per_task)
        if best:
            return Placement((self._by_rank[best[0]].share_for(tasks, request),))
        return self._spread(request)

    def _spread(self, request: ResourceRequest) -> Placement | None:
        """Tasks over as few nodes as possible: the roomiest first (then lowest rank)."""
        by_slots: dict[int, list] = {}
        total = 0
        for cores, gpus, bucket in self._usable.levels():
            slots = cores // request.cores_per_task
            if request.gpus_per_task:
                slots = min(slots, gpus // request.gpus_per_task)
            if slots:
                by_slots.setdefault(slots, []).append(bucket)
                total += slots * len(bucket)
        if total < request.tasks:
            return None
        shares = []
        remaining = request.tasks
        for slots in sorted(by_slots, reverse=True):
            wanted = -(-remaining // slots)
            ranks = sorted(r for bucket in by_slots[slots] for r in bucket.smallest(wanted))
            for rank in ranks[:wanted]:
                tasks = min(slots, remaining)
                shares.append(self._by_rank[rank].share_for(tasks, request))
                remaining -= tasks
            if remaining == 0:
                break
        return Placement(tuple(sorted(shares, key=lambda s: s.rank)))

    def _fit_nodes(
        self, index: CapacityIndex, per_node: list[int], request: ResourceRequest
    ) -> Placement | None:
        """Give each entry of ``per_node`` a distinct node of ``index`` that fits.

        Uses best fit (fewest free cores first, then lowest rank) so that roomy
        nodes stay free; the largest entries choose first.
        """
        chosen: list[tuple[int, int]] = []
        used: set[int] = set()
        for tasks in sorted(set(per_node), reverse=True):
            count = per_node.count(tasks)
            ranks = index.best(
                tasks * request.cores_per_task, tasks * request.gpus_per_task, count, used
            )
            if len(ranks) < count:
                return None
            used.update(ranks)
            chosen.extend((rank, tasks) for rank in ranks)
        chosen.sort()
        return Placement(
            tuple(self._by_rank[rank].share_for(tasks, request) for rank, tasks in chosen)
        )

    @staticmethod
    def share_need(request: ResourceRequest) -> tuple[int, int, bool]:
        """``(cores, GPUs, whole)``: what one node must have free for the
        smallest share of ``request`` any of its nodes gets (``whole``: and be
        idle). A placement that failed can succeed after resources come back
        only if some node they came to has that now."""
        tasks = min(_split(request.tasks, request.nodes or 1))
        return tasks * request.cores_per_task, tasks * request.gpus_per_task, request.exclusive

    def why_never_fits(self, request: ResourceRequest) -> tuple[str, object, str] | None:
        """If ``request`` cannot run even on the idle allocation, say why.

        Returns ``(field, value, problem)`` naming the Snakemake resource to blame,
        or None when the request fits the idle allocation; ``problem`` ends with
        the backend's hint for what is short (see ``hints``). Answers are cached
        per request shape: the nodes never change.
        """
        key = (*request.shape, request.cores_field, request.gpus_field)
        if key not in self._never_fits:
            problem = self._why_never_fits(request)
            if problem is not None:
                field, value, text, short = problem
                hint = self.hints.get(short)
                problem = (field, value, f"{text}: {hint}" if hint else text)
            self._never_fits[key] = problem
        return self._never_fits[key]

    def _why_never_fits(self, request: ResourceRequest) -> tuple[str, object, str, str] | None:
        """``(field, value, problem, what is short)``, or None if it fits."""
        if self.empty_copy().place(request) is not None:
            return None
        max_cores = max(len(s.cores) for s in self.specs)
        max_gpus = max(len(s.gpus) for s in self.specs)
        if request.cores_per_task > max_cores:
            return (
                request.cores_field,
                request.cores_per_task,
                f"is more cores than any node has (largest node: {max_cores} cores)",
                "cores",
            )
        if request.gpus_per_task > max_gpus:
            return (
                request.gpus_field,
                request.gpus_per_task
                if request.gpus_field == "gpus_per_task"
                else request.total_gpus,
                f"needs {request.gpus_per_task} GPU(s) per task but the largest node "
                f"has {max_gpus} GPU(s)",
                "gpus",
            )
        if request.nodes is not None and request.nodes > len(self.specs):
            return (
                "nodes",
                request.nodes,
                f"is more than the {len(self.specs)} node(s) of the allocation",
                "nodes",
            )
        return (
            "tasks",
            request.tasks,
            f"with {request.describe()} does not fit even on the idle allocation "
            f"({self.describe()})",
            "cores",
        )


def _split(tasks: int, nodes: int) -> list[int]:
    """Tasks per node when ``tasks`` are spread evenly over ``nodes`` nodes."""
    base, extra = divmod(tasks, nodes)
    return [base + 1] * extra + [base] * (nodes - extra)
