"""How a job (its :class:`~.snakemake_boundary.JobRecord`) is named in messages,
backend job names and log paths."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..snakemake_boundary import JobRecord

#: Characters not kept in file names (``\w`` keeps letters of any script).
_UNSAFE = re.compile(r"[^\w.=+-]+")


def where(record: JobRecord) -> str:
    """``rule 'md' (jobid 3, wildcards T=300)`` for error messages."""
    if record.is_group:
        return f"group job '{record.groupid}' (rules {', '.join(record.rules)})"
    wildcards = ", ".join(f"{k}={v}" for k, v in record.wildcards.items())
    extra = f", wildcards {wildcards}" if wildcards else ""
    return f"rule '{record.rule}' (jobid {record.jobid}{extra})"


def display_name(record: JobRecord) -> str:
    """``md[T=300,seed=1]``: short, shows rule and wildcards (backend job names)."""
    if record.is_group:
        return f"group-{record.groupid}"
    wildcards = ",".join(f"{k}={v}" for k, v in record.wildcards.items())
    return f"{record.rule}[{wildcards}]" if wildcards else record.rule


def journal_record(record: JobRecord) -> dict[str, Any]:
    """What the journal records of a job: rule, wildcards, job id, attempt."""
    return {
        "rule": record.rule,
        "wildcards": record.wildcards,
        "jobid": record.jobid,
        "attempt": record.attempt,
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


def log_path(log_dir: str | Path, record: JobRecord) -> Path:
    """One log per job and attempt, findable by rule and wildcards.

    ``<log_dir>/rule_md/T=300_seed=1/attempt1.log``; a group job's log is
    ``<log_dir>/group_<groupid>/<group job id>/attempt1.log`` (its members
    also write their own ``log:`` files).
    """
    attempt = f"attempt{record.attempt}.log"
    if record.is_group:
        group = Path(log_dir) / f"group_{_safe(str(record.groupid))}"
        return group / _safe(record.jobid) / attempt
    base = Path(log_dir) / f"rule_{_safe(record.rule)}"
    wildcards = "_".join(f"{k}={v}" for k, v in record.wildcards.items())
    return base / _safe(wildcards) / attempt if wildcards else base / attempt


def node_names(allocation: Any, ranks: Iterable[int]) -> str:
    """``node1 (rank 1), node2 (rank 2)``: ranks as the user's messages name them."""
    return ", ".join(f"{allocation.node_name(r)} (rank {r})" for r in ranks)
