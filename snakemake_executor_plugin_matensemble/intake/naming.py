"""How a Snakemake job is named in messages, backend job names and log paths."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..snakemake_boundary import facts

#: Characters not kept in file names (``\w`` keeps letters of any script).
_UNSAFE = re.compile(r"[^\w.=+-]+")


def wildcards_of(job: Any) -> dict[str, str]:
    """A single job's wildcards ({} for a group, and where the start-up probe
    found Snakemake's ``Job.wildcards_dict`` missing: names without them)."""
    if job.is_group():
        return {}
    try:
        return facts.wildcards(job)
    except AttributeError:
        return {}


def rule_of(job: Any) -> str:
    """The rule name, or the group's name for a group job."""
    return group_name(job) if job.is_group() else job.rule.name


def group_name(group: Any) -> str:
    """``group NAME`` for a group the workflow names; ``group of rules a, b``
    for the groups Snakemake makes itself (pipe groups, with a random id)."""
    try:
        uuid.UUID(str(group.groupid))
    except ValueError:
        return f"group {group.groupid}"
    return "group of rules " + ", ".join(sorted({job.rule.name for job in group.jobs}))


def where(job: Any) -> str:
    """``rule 'md' (jobid 3, wildcards T=300)`` for error messages."""
    if job.is_group():
        rules = ", ".join(sorted({j.rule.name for j in job.jobs}))
        return f"group job '{job.groupid}' (rules {rules})"
    wildcards = ", ".join(f"{k}={v}" for k, v in wildcards_of(job).items())
    extra = f", wildcards {wildcards}" if wildcards else ""
    return f"rule '{job.rule.name}' (jobid {job.jobid}{extra})"


def display_name(job: Any) -> str:
    """``md[T=300,seed=1]``: short, shows rule and wildcards (backend job names)."""
    if job.is_group():
        return f"group-{job.groupid}"
    wildcards = ",".join(f"{k}={v}" for k, v in wildcards_of(job).items())
    return f"{job.rule.name}[{wildcards}]" if wildcards else job.rule.name


def journal_record(job: Any) -> dict[str, Any]:
    """What the journal records of a job: rule, wildcards, job id, attempt."""
    return {
        "rule": rule_of(job),
        "wildcards": wildcards_of(job),
        "jobid": str(job.jobid),
        "attempt": job.attempt,
    }


def _safe(text: str) -> str:
    """A readable file name for ``text``, distinct for distinct texts.

    Letters of any script, digits and ``._=+-`` are kept; anything else
    becomes ``_``, and then a short digest of ``text`` is added, so that
    ``a b`` and ``a_b`` never share a log. Long names keep a prefix and the
    digest.
    """
    name = _UNSAFE.sub("_", text).strip("_")
    if not name.strip("."):  # "", "." and ".." are not names of their own
        name = "_"
    if name == text and len(name) <= 120:
        return name
    return f"{name[:100]}-{hashlib.sha1(text.encode()).hexdigest()[:10]}"


def log_path(log_dir: str | Path, job: Any) -> Path:
    """One log per job and attempt, findable by rule and wildcards.

    ``<log_dir>/rule_md/T=300_seed=1/attempt1.log``; a group job's log is
    ``<log_dir>/group_<groupid>/<group job id>/attempt1.log`` (its members
    also write their own ``log:`` files).
    """
    attempt = f"attempt{job.attempt}.log"
    if job.is_group():
        group = Path(log_dir) / f"group_{_safe(str(job.groupid))}"
        return group / _safe(str(job.jobid)) / attempt
    base = Path(log_dir) / f"rule_{_safe(job.rule.name)}"
    wildcards = "_".join(f"{k}={v}" for k, v in wildcards_of(job).items())
    return base / _safe(wildcards) / attempt if wildcards else base / attempt


def node_names(allocation: Any, ranks: Iterable[int]) -> str:
    """``node1 (rank 1), node2 (rank 2)``: ranks as the user's messages name them."""
    return ", ".join(f"{allocation.node_name(r)} (rank {r})" for r in ranks)
