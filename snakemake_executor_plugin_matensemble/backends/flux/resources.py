"""Flux resources as the packer's nodes, and Flux resource events (pure)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

from ...packing.nodes import NodeSpec
from ..base import ResourceEvent
from ..local_resources import parse_id_list

log = logging.getLogger("snakemake.logging.matensemble.flux")


def nodes_from_rset(
    rset_json: dict[str, Any], expand_hostlist: Callable[[str], list[str]]
) -> list[NodeSpec]:
    """Per-rank cores and GPU ids of an Rv1 resource set (``R_lite``)."""
    execution = rset_json.get("execution", {})
    hostnames = [host for entry in execution.get("nodelist", []) for host in expand_hostlist(entry)]
    per_rank: dict[int, tuple[list[int], list[str]]] = {}
    for entry in execution.get("R_lite", []):
        children = entry.get("children", {})
        cores = parse_id_list(children.get("core", ""))
        gpus = [str(g) for g in parse_id_list(children.get("gpu", ""))]
        for rank in parse_id_list(str(entry["rank"])):
            have_cores, have_gpus = per_rank.setdefault(rank, ([], []))
            have_cores.extend(cores)
            have_gpus.extend(gpus)
    ranks = sorted(per_rank)
    return [
        NodeSpec(
            rank=rank,
            name=hostnames[i] if i < len(hostnames) else f"rank{rank}",
            cores=tuple(sorted(set(per_rank[rank][0]))),
            gpus=tuple(per_rank[rank][1]),
        )
        for i, rank in enumerate(ranks)
    ]


def expiration_from_rset(rset_json: Mapping[str, Any]) -> float | None:
    """When the instance's resources expire (epoch seconds), or None if never."""
    expiration = rset_json.get("execution", {}).get("expiration", 0)
    return float(expiration) if expiration and math.isfinite(float(expiration)) else None


def reserve_own_cores(nodes: list[NodeSpec], rank: int, count: int) -> list[NodeSpec]:
    """Leave ``count`` cores of ``rank`` to Snakemake and the broker (never all)."""
    result = []
    for node in nodes:
        if node.rank == rank and count > 0:
            keep = max(1, len(node.cores) - count)
            if keep < len(node.cores):
                log.info(
                    f"matensemble: keeping {len(node.cores) - keep} core(s) of rank "
                    f"{rank} ({node.name}) free for Snakemake and the Flux broker "
                    "(--matensemble-flux-reserve-cores)."
                )
            node = NodeSpec(node.rank, node.name, node.cores[:keep], node.gpus)
        result.append(node)
    return result


#: Resource journal event (RFC 21) -> the plugin's kind of change.
_KINDS = {
    "drain": "drain",
    "undrain": "undrain",
    "offline": "down",
    "online": "up",
    "torpid": "drain",
    "lively": "undrain",
}


def resource_event(name: str, context: Mapping[str, Any], timestamp: float) -> ResourceEvent | None:
    """One event of Flux's resource journal as a :class:`ResourceEvent`.

    ``timestamp`` is the event's time in epoch seconds. ``torpid`` (a broker
    that stopped answering for a while) counts as drained until ``lively``.
    Returns None for events that do not change what jobs may use.
    """
    if name == "resource-update":
        if "expiration" not in context:
            return None
        expiration = float(context["expiration"] or 0)
        return ResourceEvent(
            "expiration",
            time=timestamp,
            expiration=expiration if expiration > 0 and math.isfinite(expiration) else None,
        )
    kind = _KINDS.get(name)
    if kind is None:
        return None
    ranks = tuple(parse_id_list(str(context.get("idset", ""))))
    if not ranks:
        return None
    reason = str(context.get("reason", "")) or {"torpid": "the broker stopped answering"}.get(
        name, ""
    )
    return ResourceEvent(kind, ranks, reason, timestamp)
