"""How many child instances a run starts (``--matensemble-flux-children``), and why.

``off``: none. ``N``: N children over the allocation's nodes (split by
:func:`.groups.split_ranks`), or a clear error where children cannot work.
``auto``: children only where they can and do pay:

* alloc-bypass works in the enclosing instance (the user owns it and did not
  turn bypass off): a job over more than one child runs there, on nodes the
  children hold in its scheduler, so it must be placed by its R, not matched;
* every node has its own broker (the instance's ``size`` covers every rank of
  its R): a child's brokers run on its nodes, so fake nodes of a one-broker
  test instance can never host one;
* at least :data:`AUTO_MIN_NODES` nodes: below, one instance keeps up.

``auto`` starts ``max(2, nodes // AUTO_NODES_PER_CHILD)`` children. Both
constants are set from the crossover measured by ``benchmarks/full_machine.py``
(docs/performance.md); they are the only place to change it.
"""

from __future__ import annotations

from dataclasses import dataclass

#: ``auto`` starts children only for allocations of at least this many nodes.
#: Measured (docs/performance.md, "Crossover for auto"): with alloc-bypass one
#: instance's cost per job does not grow with its size, and children gained
#: nothing up to 9,408 fake nodes on one 2-core machine; projected from the
#: broker CPU per job, 2-4 children about double the rate where each child's
#: brokers have nodes of their own: half of Frontier (4,704 nodes) and up.
AUTO_MIN_NODES = 4704
#: ``auto``'s nodes per child (at least 2 children when it starts any): 4 on
#: Frontier's 9,408 nodes.
AUTO_NODES_PER_CHILD = 2352
SETTING = "flux_children"


@dataclass(frozen=True)
class ChildrenChoice:
    """How many children to start (0: none) and why, in one sentence."""

    count: int
    reason: str


def parse_children(value: object) -> str | int:
    """``"off"``, ``"auto"`` or a count >= 1; otherwise ValueError(problem, fix)."""
    text = str(value).strip().lower()
    if text in ("off", "auto"):
        return text
    try:
        count = int(text)
    except ValueError:
        raise ValueError(
            "is not off, auto or a number of child instances",
            "give e.g. --matensemble-flux-children auto, off or 4",
        ) from None
    if count < 1:
        raise ValueError(
            "must be at least 1 child instance",
            "give off for none, or auto to let the plugin choose",
        )
    return count


def choose_children(
    setting: object, *, nodes: int, brokers: int, highest_rank: int, bypass: bool
) -> ChildrenChoice:
    """The choice for ``setting`` in an instance of ``brokers`` brokers whose R
    has ``nodes`` usable nodes (highest rank ``highest_rank``); ``bypass``:
    alloc-bypass works in the enclosing instance. An explicit count that cannot
    work raises ValueError(problem, fix) (nothing has been submitted yet)."""
    wanted = parse_children(setting)
    if wanted == "off":
        return ChildrenChoice(0, "--matensemble-flux-children off")
    why_not, fix = _why_not(nodes, brokers, highest_rank, bypass) or (None, "")
    if wanted == "auto":
        if why_not is not None:
            return ChildrenChoice(0, f"auto: {why_not}")
        if nodes < AUTO_MIN_NODES:
            return ChildrenChoice(
                0,
                f"auto: {nodes} node(s), below the {AUTO_MIN_NODES} nodes where child "
                "instances pay (one Flux instance keeps up)",
            )
        count = max(2, nodes // AUTO_NODES_PER_CHILD)
        return ChildrenChoice(
            count,
            f"auto: {nodes} nodes (>= {AUTO_MIN_NODES}), about {AUTO_NODES_PER_CHILD} nodes "
            "per child",
        )
    assert isinstance(wanted, int)
    if why_not is not None:
        raise ValueError(f"cannot start child instances here: {why_not}", fix)
    if wanted > nodes:
        raise ValueError(
            f"asks for {wanted} child instances but the allocation has {nodes} usable "
            "node(s), and each child needs one",
            f"give at most {nodes}, or auto",
        )
    return ChildrenChoice(wanted, f"--matensemble-flux-children {wanted}")


def _why_not(nodes: int, brokers: int, highest_rank: int, bypass: bool) -> tuple[str, str] | None:
    """Why children cannot work here, and the fix; None if they can."""
    if highest_rank >= brokers:
        return (
            f"the instance has {brokers} broker(s) for {highest_rank + 1} nodes (fake nodes): "
            "a child needs a broker on each of its nodes",
            "run one broker per node (srun/flux batch do), or use off or auto",
        )
    if nodes < 2:
        return "one node: nothing to split", "use off or auto"
    if not bypass:
        return (
            "alloc-bypass is off in the enclosing instance (a job over more than one child "
            "runs there, on nodes the children hold, by its own R)",
            "run in an instance this user owns, without --matensemble-flux-no-alloc-bypass, "
            "or use off or auto",
        )
    return None
