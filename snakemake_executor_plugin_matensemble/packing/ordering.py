"""Queue orders: which of the jobs Snakemake handed over is next in line.

Snakemake's ``priority:`` always comes first; an order decides among jobs of
equal priority. Orders are small classes registered by name; users choose one
with ``--matensemble-order``. A job's place is fixed when it is queued (its
sort key), so the queue stays a heap per request shape.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Protocol


class _Estimator(Protocol):
    def estimate(self, ticket: Any) -> float | None: ...


class QueueOrder(ABC):
    """The sort key of a queued job: smaller goes first."""

    name: ClassVar[str]
    summary: ClassVar[str]

    @abstractmethod
    def key(self, ticket: Any) -> tuple:
        """Where ``ticket`` (a :class:`~.packer.JobTicket`) stands in line."""


class ArrivalOrder(QueueOrder):
    """Snakemake's priority, then the order Snakemake handed the jobs over."""

    name = "arrival"
    summary = "Snakemake's priority, then first handed over, first in line"

    def key(self, ticket: Any) -> tuple[int, int]:
        return (-ticket.priority, ticket.key)


class LongestFirstOrder(QueueOrder):
    """Snakemake's priority, then the longest expected runtime first (LPT), then
    arrival. A job whose runtime cannot be estimated counts as the longest:
    unknown work is started early rather than left for the end, where it would
    run on alone."""

    name = "longest-first"
    summary = (
        "Snakemake's priority, then the longest runtime first (the runtime "
        "resource, else --matensemble-runtime-estimate's estimate; a job with "
        "none counts as the longest), then first handed over: the makespan "
        "heuristic LPT, so that short jobs fill the end of the run"
    )

    def __init__(self, estimator: _Estimator):
        self.estimator = estimator

    def key(self, ticket: Any) -> tuple[int, float, int]:
        runtime = self.estimator.estimate(ticket)
        return (-ticket.priority, -(math.inf if runtime is None else runtime), ticket.key)


ORDERS: dict[str, type[QueueOrder]] = {
    order.name: order for order in (LongestFirstOrder, ArrivalOrder)
}


def make_order(name: str, estimator: _Estimator) -> QueueOrder:
    """The order called ``name`` (a key of :data:`ORDERS`); ``estimator`` gives
    runtimes (the deadline guard's :class:`~.deadline.RuntimeEstimator`)."""
    if name == LongestFirstOrder.name:
        return LongestFirstOrder(estimator)
    return ORDERS[name]()
