"""Which child instance runs a placed job, and the job's placement in the
child's own ranks (pure).

The packer places every job on the enclosing instance's ranks. A job whose
ranks all belong to one child runs there, its ranks rewritten to the child's
broker ranks (:meth:`~.child.ChildInstance.local_rank`); a job over ranks of
more than one child (or of none) runs in the enclosing instance.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from ....packing.nodes import Placement
from .child import ChildInstance


class ChildRoutes:
    """Enclosing rank -> child, for routing placements."""

    def __init__(self, children: Iterable[ChildInstance]) -> None:
        self.children = {child.name: child for child in children}
        self._by_rank: dict[int, ChildInstance] = {}
        for child in self.children.values():
            for rank in child.ranks:
                if rank in self._by_rank:
                    raise ValueError(
                        f"rank {rank} is in two child instances "
                        f"({self._by_rank[rank].name} and {child.name})"
                    )
                self._by_rank[rank] = child

    def child_for(self, placement: Placement) -> ChildInstance | None:
        """The child owning all of ``placement``'s ranks; None: the enclosing instance."""
        shares = placement.shares
        if not shares:
            return None
        child = self._by_rank.get(shares[0].rank)
        if child is None:
            return None
        for share in shares[1:]:
            if self._by_rank.get(share.rank) is not child:
                return None
        return child

    def child_of_rank(self, rank: int) -> ChildInstance | None:
        return self._by_rank.get(rank)


def local_placement(placement: Placement, child: ChildInstance) -> Placement:
    """``placement`` in ``child``'s broker ranks (same cores and GPUs)."""
    return Placement(
        tuple(replace(share, rank=child.local_rank(share.rank)) for share in placement.shares)
    )


def local_hostnames(hostnames: Mapping[int, str], child: ChildInstance) -> dict[int, str]:
    """The child's broker rank -> host name (a child's rank i is its i-th enclosing rank)."""
    return {local: hostnames.get(rank, f"rank{rank}") for local, rank in enumerate(child.ranks)}


def enclosing_ranks(local_ranks: Iterable[int], child: ChildInstance) -> tuple[int, ...]:
    """Child broker ranks as the enclosing instance's ranks (unknown ones left out)."""
    return tuple(sorted(child.ranks[rank] for rank in local_ranks if 0 <= rank < len(child.ranks)))
