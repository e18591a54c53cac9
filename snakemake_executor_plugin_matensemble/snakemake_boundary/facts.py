"""What the plugin reads of a Snakemake job beyond the executor-plugin interface.

Each reader names the internal it reads; :data:`JOB_FACTS` lists them for the
start-up probe (:func:`.probing.missing_facts`). The boundary reads them only when
the probe found them all; otherwise every job takes Snakemake's per-job command.
"""

from __future__ import annotations

from itertools import chain
from typing import Any

#: (owner, attribute, what the plugin decides with it), checked by the probe:
#: owner "Job" and "IOFile" are classes (properties, slots), "Rule" is a rule
#: object (instance attributes)
JOB_FACTS: tuple[tuple[str, str, str], ...] = (
    ("Job", "is_script", "the rule kind (script:)"),
    ("Job", "is_notebook", "the rule kind (notebook:)"),
    ("Job", "is_wrapper", "the rule kind (wrapper:)"),
    ("Job", "is_run", "run: blocks run per job"),
    ("Job", "is_cwl", "cwl: runs per job"),
    ("Job", "is_template_engine", "template_engine: runs per job"),
    ("Job", "is_shadow", "shadow: runs per job"),
    ("Job", "is_pipe", "pipe() outputs"),
    ("Job", "is_service", "service() outputs"),
    ("Job", "restart_times", "whether a failed job is retried"),
    ("Job", "wildcards_dict", "job names and log paths"),
    ("Rule", "shellcmd", "the rule kind (shell:)"),
    ("Rule", "params", "params computed from input files"),
    ("Rule", "resources", "resources computed from input files"),
    ("Rule", "is_handover", "handover rules run per job"),
    ("IOFile", "is_storage", "remote storage runs per job"),
)

#: Kinds of rule whose process Snakemake's shell() starts (checked in this order).
DIRECT_KINDS = (("is_script", "script"), ("is_notebook", "notebook"), ("is_wrapper", "wrapper"))
#: Kinds of rule that run Python in the job's own process.
PER_JOB_KINDS = (
    (
        "is_run",
        "run",
        "a run: block (Snakemake's local executor also starts one Snakemake per job)",
    ),
    ("is_cwl", "cwl", "a cwl: directive"),
    ("is_template_engine", "template_engine", "a template_engine: directive"),
)


def rule_kind(job: Any) -> str:
    """``shell``, ``script``, ``notebook``, ``wrapper``, ``run``, ``cwl``,
    ``template_engine`` or ``other``, of a single job."""
    for flag, kind in DIRECT_KINDS:
        if getattr(job, flag):
            return kind
    for flag, kind, _ in PER_JOB_KINDS:
        if getattr(job, flag):
            return kind
    return "shell" if job.rule.shellcmd is not None else "other"


def per_job_kind(job: Any) -> str | None:
    """What in ``job`` runs Python in its own process (None: nothing)."""
    for flag, _, what in PER_JOB_KINDS:
        if getattr(job, flag):
            return what
    return None


def is_shadow(job: Any) -> bool:
    return bool(job.is_shadow)


def is_handover(job: Any) -> bool:
    return bool(job.rule.is_handover)


def uses_storage(job: Any) -> bool:
    """A file of ``job`` (input, output, log) is in remote storage."""
    return any(f.is_storage for f in chain(job.input, job.output, job.log))


def is_pipe(job: Any) -> bool:
    return bool(job.is_pipe)


def is_service(job: Any) -> bool:
    return bool(job.is_service)


def rule_params(job: Any) -> list[Any]:
    """The rule's params as written (values or functions)."""
    return [*job.rule.params]


def rule_resources(job: Any) -> Any:
    """The rule's resources as written (values or functions): Snakemake's own
    mapping (``get``, ``values``), or {} where the rule has none."""
    return job.rule.resources or {}


def shell_command(job: Any) -> str | None:
    """The rule's ``shell:`` command as written (None: not a shell rule)."""
    return job.rule.shellcmd


def restart_times(job: Any) -> int:
    """How often Snakemake retries ``job`` after a failure (``--retries``, ``retries:``)."""
    return int(job.restart_times)


def wildcards(job: Any) -> dict[str, str]:
    return {k: str(v) for k, v in (job.wildcards_dict or {}).items()}
