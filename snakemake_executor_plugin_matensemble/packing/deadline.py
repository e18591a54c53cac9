"""The allocation's end: when it is, how long jobs run, and how to resume.

Clocks: the packer decides in *monotonic* seconds (``time.monotonic``); Flux,
the journal and the ``--matensemble-deadline`` setting speak *epoch* seconds
(``time.time``). :class:`DeadlineGuard` converts once, at this seam
(:meth:`DeadlineGuard.set_end`), and keeps the end in the packer's clock.
Durations are seconds everywhere.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import os
import re
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("snakemake.logging.matensemble.deadline")

#: ``--matensemble-runtime-estimate`` choices
RUNTIME_ESTIMATES = ("declared", "journal")
#: ``--matensemble-unknown-runtime`` choices
UNKNOWN_RUNTIME = ("start", "hold")

_DURATION = re.compile(
    r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*$"
)


def parse_deadline(text: str | None, now: float | None = None) -> float | None:
    """``--matensemble-deadline`` as epoch seconds.

    Accepts an ISO time (``2026-11-23T18:00``, ``2026-11-23 18:00:00+00:00``;
    without a zone it is local time), a time of day (``18:00``: today, or
    tomorrow if that has passed), epoch seconds (``1795420719``), or a
    duration from ``now`` (epoch seconds; default the current time):
    ``90m``, ``2h30m``, ``45s``, ``1.5h``. ``none`` gives ``math.inf`` (no end,
    whatever the backend says). None or empty: None (no override).
    Raises ValueError for anything else.
    """
    if text is None or not str(text).strip():
        return None
    text = str(text).strip()
    now = time.time() if now is None else now
    if text.lower() in ("none", "never", "off"):
        return math.inf
    if re.fullmatch(r"\d{9,}(\.\d+)?", text):
        return float(text)
    match = _DURATION.match(text)
    if match and any(match.groups()) and re.search(r"[hms]$", text):
        hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
        return now + hours * 3600 + minutes * 60 + seconds
    if re.fullmatch(r"\d{1,2}:\d{2}(:\d{2})?", text):
        today = _dt.datetime.fromtimestamp(now).date().isoformat()
        when = _dt.datetime.fromisoformat(f"{today}T{text}").timestamp()
        return when if when > now else when + 86400
    try:
        return _dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: give an ISO time (2026-11-23T18:00), a time of "
            "day (18:00), epoch seconds, a duration from now (90m, 2h30m, 45s) or 'none'"
        ) from None


def format_epoch(epoch: float) -> str:
    """An epoch time as local ``YYYY-MM-DD HH:MM:SS`` with the zone."""
    return _dt.datetime.fromtimestamp(epoch).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def resume_command(argv: Sequence[str] | None = None, executable: str | None = None) -> str:
    """The exact command that resumes this snakemake run in the next allocation.

    Built from the snakemake process's ``argv`` (default ``sys.argv``): a run
    started as ``python -m snakemake`` is resumed the same way with
    ``executable`` (default ``sys.executable``); ``--rerun-incomplete`` is added
    (outputs of jobs cut off by an allocation's abrupt end are redone) unless
    it is there already. Finished jobs are not rerun: Snakemake sees their
    outputs.
    """
    argv = list(sys.argv if argv is None else argv)
    executable = executable or sys.executable
    if not argv:
        argv = ["snakemake"]
    first = argv[0]
    if first.endswith(os.path.join("snakemake", "__main__.py")) or first == "-m":
        command = [executable, "-m", "snakemake", *argv[1:]]
    else:
        command = [first, *argv[1:]]
    if not any(a in ("--rerun-incomplete", "--ri") for a in command):
        command.append("--rerun-incomplete")
    return shlex.join(command)


@dataclass
class RuntimeEstimator:
    """How long a job runs, in seconds, if it can be said.

    ``declared``: the job's ``runtime`` resource only. ``journal``: that, else
    the longest successful run of the same rule in earlier runs' journals.
    """

    mode: str = "declared"
    #: rule -> longest successful run, seconds (from earlier journals)
    observed: dict[str, float] = field(default_factory=dict)

    def estimate(self, ticket: Any) -> float | None:
        walltime = ticket.request.walltime_s
        if walltime is not None:
            return float(walltime)
        if self.mode == "journal":
            return self.observed.get(getattr(ticket, "rule", "") or "")
        return None


class DeadlineGuard:
    """Decides whether a job can finish before the allocation ends.

    ``end`` is in the packer's clock (``clock``: monotonic seconds); it is set
    from epoch seconds with :meth:`set_end`. ``margin``: seconds kept free
    before the end. ``override``: the ``--matensemble-deadline`` setting (epoch
    seconds; ``math.inf``: no end), which wins over what the backend says.
    """

    def __init__(
        self,
        estimator: RuntimeEstimator | None = None,
        margin: float = 30.0,
        unknown: str = "start",
        override: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ):
        self.estimator = estimator or RuntimeEstimator()
        self.margin = margin
        self.unknown = unknown
        self.override = override
        self.clock = clock
        self.wall = wall
        #: the end in the packer's clock (monotonic seconds); None: no end
        self.end: float | None = None
        #: the end in epoch seconds, for messages
        self.end_epoch: float | None = None
        self._warned_unknown = False
        if override is not None:
            self._set(override)

    @classmethod
    def from_settings(
        cls,
        settings: Any,
        read_durations: Callable[[str], dict[str, float]],
        clock: Callable[[], float] = time.monotonic,
    ) -> DeadlineGuard:
        """The guard the executor settings ask for; every value comes from
        ``settings`` (:class:`.settings.ExecutorSettings`, the one source of
        their defaults). ``read_durations(journal_dir)``: each rule's longest
        successful run in earlier journals (read now, for ``journal`` estimates;
        :func:`..observing.runtimes.durations_from_journals`)."""
        estimator = (
            RuntimeEstimator("journal", read_durations(settings.journal_dir))
            if settings.runtime_estimate == "journal"
            else RuntimeEstimator()
        )
        return cls(
            estimator=estimator,
            margin=float(settings.deadline_margin),
            unknown=settings.unknown_runtime,
            override=parse_deadline(settings.deadline),
            clock=clock,
        )

    def set_end(self, epoch: float | None, source: str = "the backend") -> None:
        """The allocation ends at ``epoch`` (epoch seconds; None: no end), as
        ``source`` says; ignored if the user gave ``--matensemble-deadline``."""
        if self.override is not None:
            return
        changed = epoch != self.end_epoch
        self._set(epoch)
        if changed and epoch is not None:
            log.info(f"matensemble: the allocation ends at {format_epoch(epoch)} ({source}).")

    def _set(self, epoch: float | None) -> None:
        if epoch is None or math.isinf(epoch):
            self.end = self.end_epoch = None
            return
        self.end_epoch = float(epoch)
        self.end = self.clock() + (self.end_epoch - self.wall())

    def estimate(self, ticket: Any) -> float | None:
        return self.estimator.estimate(ticket)

    def latest_start(self, ticket: Any) -> float:
        """The latest moment (packer clock) ``ticket`` may start; ``inf`` if no end,
        ``-inf`` if it may never start in this allocation."""
        if self.end is None:
            return math.inf
        estimate = self.estimate(ticket)
        if estimate is None:
            if self.unknown == "hold":
                return -math.inf
            self._warn_unknown()
            return self.end - self.margin
        return self.end - self.margin - estimate

    def _warn_unknown(self) -> None:
        if not self._warned_unknown:
            self._warned_unknown = True
            log.warning(
                "matensemble: jobs without a runtime (resources: runtime=<minutes>, and "
                "none known from earlier runs) are started until shortly before the "
                "allocation's end, which may cut them off; declare runtimes, or use "
                "--matensemble-unknown-runtime hold."
            )

    def fits(self, ticket: Any, start: float) -> bool:
        """Whether ``ticket`` started at ``start`` (packer clock) ends in time."""
        return start <= self.latest_start(ticket)
