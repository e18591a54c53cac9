"""Helpers for packer and policy tests: a settable clock, nodes, tickets."""

from snakemake_executor_plugin_matensemble.allocation import Allocation, NodeSpec
from snakemake_executor_plugin_matensemble.packer import JobTicket, Packer
from snakemake_executor_plugin_matensemble.request import ResourceRequest


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def packer(policy, cores=4, node_count=1, gpus=0, **kwargs) -> tuple[Packer, Clock]:
    clock = Clock()
    specs = [
        NodeSpec(r, f"n{r}", tuple(range(cores)), tuple(str(g) for g in range(gpus)))
        for r in range(node_count)
    ]
    return Packer(Allocation(specs), policy, clock, **kwargs), clock


_keys = iter(range(1, 10**9))


def job(cores=1, priority=0, walltime=None, name="", gpus=0, rule="") -> JobTicket:
    request = ResourceRequest(cores_per_task=cores, gpus_per_task=gpus, walltime_s=walltime)
    return JobTicket(key=next(_keys), request=request, priority=priority, payload=name, rule=rule)


def names(tickets) -> list[str]:
    return [t.payload for t in tickets]
