"""Executor settings: ``--matensemble-<name>`` flags and profile keys.

No ``from __future__ import annotations`` here: Snakemake reads the field types
at run time to build its argument parser. Boolean settings default to False
(Snakemake's parser cannot negate a True default).
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from snakemake_interface_executor_plugins.settings import ExecutorSettingsBase

from .errors import SettingsError
from .packing.deadline import RUNTIME_ESTIMATES, UNKNOWN_RUNTIME
from .packing.ordering import ORDERS
from .packing.policies import POLICIES

BACKENDS = ("auto", "local", "flux")


def setting(
    default: Any,
    help: str,
    *,
    default_text: str,
    metavar: str | None = None,
    choices: Sequence[str] | None = None,
    unit: str | None = None,
) -> Any:
    """A ``--matensemble-<name>`` field whose help ends with its default (and
    unit), and whose metavar shows its allowed values (the choices, when there
    are some). Boolean flags take no value, so no metavar."""
    if choices is not None:
        metavar = "{" + ",".join(choices) + "}"
    metadata: dict[str, Any] = {
        "help": f"{help} Default: {default_text}.",
        "default_text": default_text,
        "env_var": False,
        "required": False,
    }
    if metavar is not None:
        metadata["metavar"] = metavar
    if choices is not None:
        metadata["choices"] = list(choices)
    if unit is not None:
        metadata["unit"] = unit
    return field(default=default, metadata=metadata)


def seconds(default: float, help: str, *, default_text: str | None = None) -> Any:
    """A duration setting: SECONDS, and its default in seconds."""
    text = default_text or f"{default:g} seconds"
    return setting(default, help, default_text=text, metavar="SECONDS", unit="seconds")


@dataclass
class ExecutorSettings(ExecutorSettingsBase):
    backend: str = setting(
        "auto",
        "Where jobs run: 'flux' (every job a Flux job of the enclosing Flux "
        "instance), 'local' (process groups on this machine, pinned to their "
        "cores and GPUs), or 'auto': flux inside a Flux instance (FLUX_URI set), "
        "local outside one. Inside a Flux instance whose bindings cannot be used "
        "(not importable, libflux-core not found, another release than the "
        "broker's) the run stops before any job with the fix; 'local' runs there "
        "only when named.",
        default_text="auto",
        choices=BACKENDS,
    )
    policy: str = setting(
        "backfill",
        "Admission policy: "
        + "; ".join(f"'{name}': {cls.summary}" for name, cls in POLICIES.items())
        + ".",
        default_text="backfill",
        choices=tuple(POLICIES),
    )
    order: str = setting(
        "longest-first",
        "Which queued job is next in line among jobs of equal Snakemake "
        "priority: " + "; ".join(f"'{name}': {cls.summary}" for name, cls in ORDERS.items()) + ".",
        default_text="longest-first",
        choices=tuple(ORDERS),
    )
    reserve_after: float = seconds(
        60.0,
        "backfill policy: how long, in seconds, a job may wait while others "
        "overtake it; after that its resources are reserved (EASY backfilling), "
        "so a big job is never starved by a stream of small ones.",
    )
    local_cores: Optional[str] = setting(  # noqa: UP045
        None,
        "local backend: cores jobs may use, as a count (8) or a CPU list (0-3,6).",
        default_text="every CPU this process may run on",
        metavar="COUNT|CPULIST",
        unit="cores",
    )
    local_gpus: Optional[str] = setting(  # noqa: UP045
        None,
        "local backend: GPUs jobs may use, as a count (2), a list of ids (0,1) or 'none'.",
        default_text="detected (CUDA_VISIBLE_DEVICES/ROCR_VISIBLE_DEVICES if set, "
        "else nvidia-smi, /dev/nvidia*, or the AMD KFD topology)",
        metavar="COUNT|IDS|none",
        unit="GPUs",
    )
    kill_grace_seconds: float = seconds(
        10.0,
        "Time, in seconds, between SIGTERM and SIGKILL when a job exceeds its "
        "runtime or the run is cancelled.",
    )
    per_job_snakemake: bool = setting(
        False,
        "Turn the direct path off: run every job through its own Snakemake "
        "process. By default shell:, script:, notebook: and wrapper: rules (with "
        "conda, apptainer or env-modules deployment too) and group jobs are "
        "launched directly, with the one command Snakemake's local executor "
        "would run; only run: blocks, shadow:, benchmark:, remote storage, the "
        "rare cwl:, template_engine:, handover and output-cache rules, groups "
        "with such a member, and rules that opt out with resources: "
        "matensemble_direct=0 go through a per-job Snakemake process.",
        default_text="off (the direct path)",
    )
    journal_dir: str = setting(
        ".snakemake/matensemble",
        "Directory for run journals: <journal-dir>/<run-id>/journal.jsonl, one "
        "JSON line per job event (read by matensemble-report).",
        default_text=".snakemake/matensemble",
        metavar="DIR",
    )
    status_interval: float = seconds(
        60.0,
        "Time, in seconds, between status lines (queued, running, free "
        "cores/GPUs, done, failed) in the Snakemake log; 0 for none.",
    )
    status_file: Optional[str] = setting(  # noqa: UP045
        None,
        "Keep this JSON file current with the run's status for dashboards "
        "(replaced atomically at every status interval, or every 5 seconds).",
        default_text="none (no status file)",
        metavar="FILE",
    )
    log_dir: str = setting(
        ".snakemake/matensemble_logs",
        "Directory (relative to the working directory) for the stdout/stderr "
        "log of every job and attempt.",
        default_text=".snakemake/matensemble_logs",
        metavar="DIR",
    )

    deadline: Optional[str] = setting(  # noqa: UP045
        None,
        "When the allocation ends, overriding what the backend says (Flux: the "
        "instance's expiration): an ISO time ('2026-11-23T18:00', '18:00' for "
        "today), epoch seconds, or a duration from now ('90m', '2h30m', '45s'). "
        "Jobs are started only if they can finish before it; near it the run "
        "stops starting jobs, lets running ones finish and says how to resume in "
        "the next allocation. 'none' ignores the backend's end.",
        default_text="the allocation's end as the backend reports it (none on the local backend)",
        metavar="TIME|EPOCH|DURATION|none",
    )
    deadline_margin: float = seconds(
        30.0,
        "Time, in seconds, kept free before the allocation's end: a job starts "
        "only if it ends (by its estimated runtime) this long before the end.",
    )
    runtime_estimate: str = setting(
        "journal",
        "How long a job is expected to run, for the allocation's end: 'declared' "
        "(its runtime resource only) or 'journal' (its runtime resource, else "
        "the longest successful run of the same rule in the journals of earlier "
        "runs in --matensemble-journal-dir).",
        default_text="journal",
        choices=RUNTIME_ESTIMATES,
    )
    unknown_runtime: str = setting(
        "start",
        "Jobs with no runtime estimate when the allocation has an end: 'start' "
        "(start them until the end minus the margin; the end may cut them off, "
        "and the log says so once) or 'hold' (start none of them; they wait for "
        "the next allocation).",
        default_text="start",
        choices=UNKNOWN_RUNTIME,
    )

    flux_queue: Optional[str] = setting(  # noqa: UP045
        None,
        "flux backend: queue to submit to.",
        default_text="Flux's default queue",
        metavar="QUEUE",
    )
    flux_bank: Optional[str] = setting(  # noqa: UP045
        None,
        "flux backend: accounting bank for the jobs (flux-accounting).",
        default_text="your default bank",
        metavar="BANK",
    )
    flux_urgency: Optional[int] = setting(  # noqa: UP045
        None,
        "flux backend: urgency of every job, an integer from 0 (held) to 31.",
        default_text="Flux's 16, moved by the job's Snakemake priority",
        metavar="0-31",
        unit="urgency (0-31)",
    )
    flux_shell_options: Optional[str] = setting(  # noqa: UP045
        None,
        "flux backend: extra job shell options for every job, as comma-separated "
        "key=value pairs (e.g. 'signal=SIGUSR1@60,verbose=1'); the options the "
        "plugin sets itself (cpu-affinity, gpu-affinity, pmi) are refused.",
        default_text="none",
        metavar="KEY=VALUE,...",
    )
    flux_reserve_cores: int = setting(
        1,
        "flux backend: cores of the rank Snakemake runs on that are kept free for "
        "Snakemake itself and the Flux broker (postprocessing of thousands of "
        "short jobs needs a core; never the whole rank). 0 to use every core.",
        default_text="1 core",
        metavar="CORES",
        unit="cores",
    )
    flux_no_pin_ranks: bool = setting(
        False,
        "flux backend: do not pin each job to the ranks the packer chose (by "
        "default a 'ranks' constraint keeps Flux's placement and the packer's "
        "per-node model in step). Turn off only if the scheduler rejects rank "
        "constraints.",
        default_text="off (jobs are pinned)",
    )
    flux_no_lookahead: bool = setting(
        False,
        "flux backend: turn look-ahead submission off. By default, when the "
        "allocation is full, the next queued job (in priority order) is "
        "submitted already, pinned to the ranks of a running job of the same "
        "shape with an afterany dependency on it, so Flux starts it the moment "
        "that job ends instead of after a round trip through Snakemake.",
        default_text="off (look-ahead on)",
    )
    flux_no_alloc_bypass: bool = setting(
        False,
        "flux backend: let Flux's scheduler match every job. By default, where "
        "this user owns the Flux instance, each job's R (the ranks, cores and "
        "GPUs the packer chose) is given in its jobspec through flux-core's "
        "alloc-bypass jobtap plugin, so the scheduler never matches it (much "
        "faster on large machines; the scheduler then does not see the run's "
        "jobs, so do not share the instance with other scheduled work).",
        default_text="off (bypass where the instance is yours)",
    )
    flux_children: str = setting(
        "auto",
        "flux backend: child Flux instances (nested instances, one per group of "
        "nodes, each a job of the enclosing instance) that run the jobs placed on "
        "their nodes, so that one Flux instance does not cap the submission rate "
        "of a large allocation. 'off': none; N: N children over the allocation's "
        "nodes; 'auto': children only where they pay (an instance this user owns, "
        "with alloc-bypass, a broker per node, and at least 4,704 nodes, 2,352 per child; "
        "see docs/backends.md). A job over more than one child's nodes runs in the "
        "enclosing instance.",
        default_text="auto",
        metavar="auto|off|N",
    )
    flux_keep_inactive: int = setting(
        1000,
        "flux backend: successful inactive Flux jobs of this run kept in the "
        "instance (the newest); older ones are purged as the run goes, so that "
        "Flux's throughput does not fall over tens of thousands of jobs. Failed "
        "jobs are always kept for inspection. -1 never purges.",
        default_text="1000 jobs",
        metavar="JOBS",
        unit="jobs",
    )
    flux_pmi: Optional[str] = setting(  # noqa: UP045
        None,
        "flux backend: PMI for multi-task jobs (the job shell option 'pmi'): "
        "simple, pmi2, cray-pals or pmix, or a comma-separated list of them.",
        default_text="Flux's (simple, which MPICH and Cray MPICH use)",
        metavar="simple|pmi2|cray-pals|pmix",
    )

    def check(self) -> None:
        """Raise :class:`SettingsError` for values the plugin cannot use.

        Called first thing by the executor, before any backend, file or job is
        made; values only a backend can judge (``--matensemble-local-cores``,
        ``--matensemble-flux-shell-options``) are checked where that backend
        reads them, still before any job starts. Seconds settings are
        durations in seconds (wall time).
        """
        if self.backend not in BACKENDS:
            raise SettingsError(
                "backend", self.backend, "is not a backend", f"use one of {', '.join(BACKENDS)}"
            )
        if self.policy not in POLICIES:
            raise SettingsError(
                "policy", self.policy, "is not a policy", f"use one of {', '.join(POLICIES)}"
            )
        if self.order not in ORDERS:
            raise SettingsError(
                "order", self.order, "is not a queue order", f"use one of {', '.join(ORDERS)}"
            )
        if self.flux_urgency is not None and not 0 <= self.flux_urgency <= 31:
            raise SettingsError(
                "flux_urgency", self.flux_urgency, "is outside 0-31", "give 0 (hold) to 31"
            )
        if self.flux_reserve_cores < 0:
            raise SettingsError(
                "flux_reserve_cores", self.flux_reserve_cores, "is negative", "give 0 or more"
            )
        self._check_flux_children()
        if self.flux_keep_inactive < -1:
            raise SettingsError(
                "flux_keep_inactive",
                self.flux_keep_inactive,
                "is below -1",
                "give a number of jobs to keep, or -1 to never purge",
            )
        if self.deadline is not None:
            from .packing.deadline import parse_deadline

            try:
                parse_deadline(self.deadline)
            except ValueError as error:
                raise SettingsError(
                    "deadline", self.deadline, "is not a time", str(error).split(": ", 1)[-1]
                ) from None
        for name in ("reserve_after", "kill_grace_seconds", "status_interval", "deadline_margin"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value < 0:
                raise SettingsError(name, value, "must be a number >= 0", "give seconds, e.g. 60")
        for name in ("journal_dir", "log_dir"):
            path = Path(getattr(self, name))
            if path.exists() and not path.is_dir():
                raise SettingsError(
                    name, str(path), "is a file, not a directory", "name a directory (or a new one)"
                )
        if self.status_file is not None:
            path = Path(self.status_file)
            if not path.name or path.is_dir():
                raise SettingsError(
                    "status_file", self.status_file, "is a directory", "name a file in it"
                )

    def _check_flux_children(self) -> None:
        from .backends.flux.children.auto import SETTING, parse_children

        try:
            parse_children(self.flux_children)
        except ValueError as error:
            problem, fix = error.args
            raise SettingsError(SETTING, self.flux_children, problem, fix) from None
