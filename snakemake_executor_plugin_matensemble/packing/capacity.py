"""An index of nodes by what they have free, so placement never scans every node.

Nodes are kept in buckets by ``(free cores, free GPUs)``; a bucket knows its
lowest rank. The questions the allocation asks — "the node with the fewest
free cores (then the lowest rank) that has at least ``c`` cores and ``g``
GPUs free", "the ``m`` such nodes", "how many tasks fit in all" — cost
O(distinct free-core counts x distinct free-GPU counts) at most (at most
57 x 9 on a Frontier node), whatever the number of nodes.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from collections.abc import Collection, Iterator


class _Bucket:
    """A set of ranks with its lowest rank at hand (a heap, lazily cleaned)."""

    __slots__ = ("heap", "members")

    def __init__(self) -> None:
        self.members: set[int] = set()
        self.heap: list[int] = []

    def __len__(self) -> int:
        return len(self.members)

    def add(self, rank: int) -> None:
        self.members.add(rank)
        heapq.heappush(self.heap, rank)
        if len(self.heap) > 2 * len(self.members) + 16:
            self.heap = sorted(self.members)

    def discard(self, rank: int) -> None:
        self.members.discard(rank)

    def smallest(self, count: int) -> list[int]:
        """The ``count`` lowest ranks (fewer if the bucket is smaller), ascending."""
        heap, members = self.heap, self.members
        found: list[int] = []
        while heap and len(found) < count:
            rank = heapq.heappop(heap)
            if rank in members and (not found or found[-1] != rank):
                found.append(rank)
        for rank in found:
            heapq.heappush(heap, rank)
        return found

    def copy(self) -> _Bucket:
        twin = _Bucket()
        twin.members = set(self.members)
        twin.heap = list(self.heap)
        return twin


class CapacityIndex:
    """Ranks by ``(free cores, free GPUs)``."""

    def __init__(self) -> None:
        self._buckets: dict[tuple[int, int], _Bucket] = {}
        #: free cores -> free GPU counts with a non-empty bucket
        self._gpus_at: dict[int, set[int]] = {}
        #: the free-core counts present, ascending
        self._cores: list[int] = []

    def __len__(self) -> int:
        return sum(len(bucket) for bucket in self._buckets.values())

    def add(self, rank: int, cores: int, gpus: int) -> None:
        bucket = self._buckets.get((cores, gpus))
        if bucket is None:
            bucket = self._buckets[(cores, gpus)] = _Bucket()
            levels = self._gpus_at.get(cores)
            if levels is None:
                levels = self._gpus_at[cores] = set()
                insort(self._cores, cores)
            levels.add(gpus)
        bucket.add(rank)

    def remove(self, rank: int, cores: int, gpus: int) -> None:
        bucket = self._buckets[(cores, gpus)]
        bucket.discard(rank)
        if bucket:
            return
        del self._buckets[(cores, gpus)]
        levels = self._gpus_at[cores]
        levels.discard(gpus)
        if not levels:
            del self._gpus_at[cores]
            del self._cores[bisect_left(self._cores, cores)]

    def best(
        self, cores: int, gpus: int, count: int = 1, exclude: Collection[int] = ()
    ) -> list[int]:
        """Up to ``count`` ranks with at least ``cores`` cores and ``gpus`` GPUs
        free, not in ``exclude``: fewest free cores first, then lowest rank."""
        chosen: list[int] = []
        for have in self._cores[bisect_left(self._cores, cores) :]:
            buckets = [self._buckets[(have, free)] for free in self._gpus_at[have] if free >= gpus]
            if not buckets:
                continue
            wanted = count - len(chosen) + len(exclude)
            if len(buckets) == 1:
                ranks = buckets[0].smallest(wanted)
            else:
                ranks = sorted(r for bucket in buckets for r in bucket.smallest(wanted))
            for rank in ranks:
                if rank not in exclude:
                    chosen.append(rank)
                    if len(chosen) == count:
                        return chosen
        return chosen

    def levels(self) -> Iterator[tuple[int, int, _Bucket]]:
        """Every non-empty ``(free cores, free GPUs, bucket)``."""
        for (cores, gpus), bucket in self._buckets.items():
            yield cores, gpus, bucket

    def copy(self) -> CapacityIndex:
        twin = CapacityIndex()
        twin._buckets = {key: bucket.copy() for key, bucket in self._buckets.items()}
        twin._gpus_at = {cores: set(levels) for cores, levels in self._gpus_at.items()}
        twin._cores = list(self._cores)
        return twin
