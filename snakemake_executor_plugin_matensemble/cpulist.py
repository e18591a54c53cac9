"""The cpuset list format, ``"0-3,6"``: the one parser and formatter of the package.

Linux writes CPU sets this way (``Cpus_allowed_list`` in ``/proc/<pid>/status``,
``cpuset.cpus``, ``taskset -c``), Flux writes core, GPU and rank id sets this
way in R (``"children": {"core": "0-3"}``), and ``--matensemble-local-cores``
accepts it.
"""

from __future__ import annotations

from collections.abc import Iterable


def parse_cpu_list(text: str) -> list[int]:
    """``"0-3,6"`` -> ``[0, 1, 2, 3, 6]``: sorted, without duplicates.

    Blanks around items and empty items (``"0,,2,"``) are ignored, so ``""``
    is the empty list. Raises :class:`ValueError` naming the offending item
    for anything else: a negative or non-decimal id, or a range whose end is
    below its start (``"3-1"``).
    """
    ids: set[int] = set()
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        low, dash, high = (part.strip() for part in item.partition("-"))
        if not low.isdecimal() or (dash and not high.isdecimal()):
            raise ValueError(f"{item!r} is not an id or a range of ids such as 0-3")
        first, last = int(low), int(high) if dash else int(low)
        if last < first:
            raise ValueError(f"{item!r} is a range that ends before it starts")
        ids.update(range(first, last + 1))
    return sorted(ids)


def format_cpu_list(ids: Iterable[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2,5"``: consecutive ids as ranges, in order.

    Duplicates are dropped; the empty set is ``""``. The result parses back
    to the same ids with :func:`parse_cpu_list`.
    """
    parts: list[str] = []
    run: list[int] = []
    for n in sorted(set(ids)):
        if run and n == run[-1] + 1:
            run.append(n)
            continue
        if run:
            parts.append(_item(run))
        run = [n]
    if run:
        parts.append(_item(run))
    return ",".join(parts)


def _item(run: list[int]) -> str:
    return f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0])
