"""How long each rule's jobs ran in earlier runs, from their journals.

Behind ``--matensemble-runtime-estimate journal``: the packer's
:class:`~..packing.deadline.RuntimeEstimator` gets these figures at start-up
(the executor reads them here and hands them over), so the packing side never
reads a journal itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..backends.base import JobStatus
from .journal import RunRecord, journal_paths, read_journal

#: the journal's status of an attempt that succeeded
SUCCESS = JobStatus.SUCCESS.value


def durations_from_journals(journal_dir: str | Path, limit: int = 20) -> dict[str, float]:
    """rule -> longest successful run (seconds) in the newest ``limit`` journals
    under ``journal_dir`` (newest by run id, as :func:`.journal.journal_paths`
    orders them)."""
    runs = []
    for path in journal_paths(journal_dir)[-limit:]:
        try:
            runs.append(read_journal(path))
        except OSError:  # removed meanwhile, or unreadable: no estimates from it
            continue
    return observed_durations(runs)


def observed_durations(runs: Iterable[RunRecord]) -> dict[str, float]:
    """rule -> longest successful run (seconds, from the backend's start to its
    end) over the given journals. Only attempts whose final verdict is success
    count: one Snakemake failed afterwards (missing output) tells nothing of
    how long a good run takes."""
    longest: dict[str, float] = {}
    for run in runs:
        for job in run.jobs:
            if job.status != SUCCESS or job.start is None or job.end is None:
                continue
            duration = job.end - job.start
            if job.rule and duration >= 0:
                longest[job.rule] = max(longest.get(job.rule, 0.0), duration)
    return longest
