"""Splitting an allocation's broker ranks into node groups, one child each."""

from __future__ import annotations

from collections.abc import Sequence


def split_ranks(ranks: Sequence[int], groups: int) -> list[tuple[int, ...]]:
    """``ranks`` (sorted, distinct) cut into ``groups`` consecutive groups whose
    sizes differ by at most one (the first groups get the extra ranks)."""
    ordered = sorted(set(ranks))
    if len(ordered) != len(ranks):
        raise ValueError(f"ranks must be distinct, got {list(ranks)}")
    if groups < 1:
        raise ValueError(f"the number of child instances must be >= 1, got {groups}")
    if groups > len(ordered):
        raise ValueError(
            f"{groups} child instances need at least {groups} nodes; the allocation has "
            f"{len(ordered)} (use fewer children, e.g. --matensemble-flux-children "
            f"{len(ordered)})"
        )
    size, extra = divmod(len(ordered), groups)
    result: list[tuple[int, ...]] = []
    start = 0
    for index in range(groups):
        end = start + size + (1 if index < extra else 0)
        result.append(tuple(ordered[start:end]))
        start = end
    return result


def idset(ranks: Sequence[int]) -> str:
    """Flux's idset form of ``ranks``: ``"0-3,7"``."""
    ordered = sorted(set(ranks))
    parts: list[str] = []
    run_start = previous = None
    for rank in ordered:
        if previous is not None and rank == previous + 1:
            previous = rank
            continue
        if run_start is not None:
            parts.append(_run(run_start, previous))
        run_start = previous = rank
    if run_start is not None:
        parts.append(_run(run_start, previous))
    return ",".join(parts)


def _run(first: int, last: int | None) -> str:
    return str(first) if last in (None, first) else f"{first}-{last}"
