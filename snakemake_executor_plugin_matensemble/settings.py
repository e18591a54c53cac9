"""Executor settings: ``--matensemble-<name>`` flags and profile keys.

No ``from __future__ import annotations`` here: Snakemake reads the field types
at run time to build its argument parser. Boolean settings default to False
(Snakemake's parser cannot negate a True default).
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from snakemake_interface_executor_plugins.settings import ExecutorSettingsBase

from .errors import SettingsError
from .policies import POLICIES

BACKENDS = ("auto", "local", "flux")


@dataclass
class ExecutorSettings(ExecutorSettingsBase):
    backend: str = field(
        default="auto",
        metadata={
            "help": "Where jobs run: 'flux' (every job a Flux job of the enclosing "
            "Flux instance), 'local' (process groups on this machine, pinned to "
            "their cores and GPUs), or 'auto': flux when the flux Python bindings "
            "import and FLUX_URI points to a running instance, else local.",
            "choices": list(BACKENDS),
            "env_var": False,
            "required": False,
        },
    )
    policy: str = field(
        default="backfill",
        metadata={
            "help": "Admission policy: "
            + "; ".join(f"'{name}': {cls.summary}" for name, cls in POLICIES.items())
            + ".",
            "choices": list(POLICIES),
            "env_var": False,
            "required": False,
        },
    )
    reserve_after: float = field(
        default=60.0,
        metadata={
            "help": "backfill policy: seconds a job may wait while others overtake "
            "it; after that its resources are reserved (EASY backfilling), so a "
            "big job is never starved by a stream of small ones.",
            "env_var": False,
            "required": False,
        },
    )
    local_cores: Optional[str] = field(  # noqa: UP045
        default=None,
        metadata={
            "help": "local backend: cores jobs may use, as a count (8) or a CPU "
            "list (0-3,6). Default: every CPU this process may run on.",
            "env_var": False,
            "required": False,
        },
    )
    local_gpus: Optional[str] = field(  # noqa: UP045
        default=None,
        metadata={
            "help": "local backend: GPUs jobs may use, as a count (2), a list of "
            "ids (0,1) or 'none'. Default: detected (CUDA_VISIBLE_DEVICES/"
            "ROCR_VISIBLE_DEVICES if set, else nvidia-smi, /dev/nvidia*, or the "
            "AMD KFD topology).",
            "env_var": False,
            "required": False,
        },
    )
    kill_grace_seconds: float = field(
        default=10.0,
        metadata={
            "help": "Seconds between SIGTERM and SIGKILL when a job exceeds its "
            "runtime or the run is cancelled.",
            "env_var": False,
            "required": False,
        },
    )
    per_job_snakemake: bool = field(
        default=False,
        metadata={
            "help": "Turn the direct shell path off: run every job through its own "
            "Snakemake process. By default, plain shell: rules are run by "
            "launching their shell command directly (formatted and prepared "
            "exactly as Snakemake does); rules with run:/script:/wrapper:/"
            "notebook:, conda/container/env-module deployment, shadow, benchmark, "
            "group jobs or remote storage always use a per-job Snakemake process, "
            "and a rule can opt out with resources: matensemble_direct=0.",
            "env_var": False,
            "required": False,
        },
    )
    journal_dir: str = field(
        default=".snakemake/matensemble",
        metadata={
            "help": "Directory for run journals: <journal-dir>/<run-id>/journal.jsonl, "
            "one JSON line per job event (read by matensemble-report).",
            "env_var": False,
            "required": False,
        },
    )
    status_interval: float = field(
        default=60.0,
        metadata={
            "help": "Seconds between status lines (queued, running, free cores/GPUs, "
            "done, failed) in the Snakemake log; 0 for none.",
            "env_var": False,
            "required": False,
        },
    )
    status_file: Optional[str] = field(  # noqa: UP045
        default=None,
        metadata={
            "help": "Keep this JSON file current with the run's status for dashboards "
            "(replaced atomically at every status interval, or every 5 s).",
            "env_var": False,
            "required": False,
        },
    )
    log_dir: str = field(
        default=".snakemake/matensemble_logs",
        metadata={
            "help": "Directory (relative to the working directory) for the "
            "stdout/stderr log of every job and attempt.",
            "env_var": False,
            "required": False,
        },
    )

    deadline: Optional[str] = field(  # noqa: UP045
        default=None,
        metadata={
            "help": "When the allocation ends, overriding what the backend says "
            "(Flux: the instance's expiration): an ISO time ('2026-11-23T18:00', "
            "'18:00' for today), epoch seconds, or a duration from now ('90m', "
            "'2h30m', '45s'). Jobs are started only if they can finish before "
            "it; near it the run stops starting jobs, lets running ones finish and "
            "says how to resume in the next allocation. 'none' ignores the "
            "backend's end.",
            "env_var": False,
            "required": False,
        },
    )
    deadline_margin: float = field(
        default=30.0,
        metadata={
            "help": "Seconds kept free before the allocation's end: a job starts "
            "only if it ends (by its estimated runtime) this long before the end.",
            "env_var": False,
            "required": False,
        },
    )
    runtime_estimate: str = field(
        default="journal",
        metadata={
            "help": "How long a job is expected to run, for the allocation's end: "
            "'declared' (its runtime resource only) or 'journal' (its runtime "
            "resource, else the longest successful run of the same rule in the "
            "journals of earlier runs in --matensemble-journal-dir).",
            "choices": ["declared", "journal"],
            "env_var": False,
            "required": False,
        },
    )
    unknown_runtime: str = field(
        default="start",
        metadata={
            "help": "Jobs with no runtime estimate when the allocation has an end: "
            "'start' (start them until the end minus the margin; the end may cut "
            "them off, and the log says so once) or 'hold' (start none of them; "
            "they wait for the next allocation).",
            "choices": ["start", "hold"],
            "env_var": False,
            "required": False,
        },
    )

    flux_queue: Optional[str] = field(  # noqa: UP045
        default=None,
        metadata={
            "help": "flux backend: queue to submit to (Flux's default queue if unset).",
            "env_var": False,
            "required": False,
        },
    )
    flux_bank: Optional[str] = field(  # noqa: UP045
        default=None,
        metadata={
            "help": "flux backend: accounting bank for the jobs (flux-accounting).",
            "env_var": False,
            "required": False,
        },
    )
    flux_urgency: Optional[int] = field(  # noqa: UP045
        default=None,
        metadata={
            "help": "flux backend: urgency (0-31) of every job. Default: Flux's 16, "
            "moved up or down by the job's Snakemake priority.",
            "env_var": False,
            "required": False,
        },
    )
    flux_shell_options: Optional[str] = field(  # noqa: UP045
        default=None,
        metadata={
            "help": "flux backend: extra job shell options for every job, as "
            "comma-separated key=value pairs (e.g. 'signal=SIGUSR1@60,verbose=1').",
            "env_var": False,
            "required": False,
        },
    )
    flux_reserve_cores: int = field(
        default=1,
        metadata={
            "help": "flux backend: cores of the rank Snakemake runs on that are kept "
            "free for Snakemake itself and the Flux broker (postprocessing of "
            "thousands of short jobs needs a core; never the whole rank). 0 to "
            "use every core.",
            "env_var": False,
            "required": False,
        },
    )
    flux_no_pin_ranks: bool = field(
        default=False,
        metadata={
            "help": "flux backend: do not pin each job to the ranks the packer chose "
            "(by default a 'ranks' constraint keeps Flux's placement and the "
            "packer's per-node model in step). Turn off only if the scheduler "
            "rejects rank constraints.",
            "env_var": False,
            "required": False,
        },
    )
    flux_no_lookahead: bool = field(
        default=False,
        metadata={
            "help": "flux backend: turn look-ahead submission off. By default, when "
            "the allocation is full, the next queued job (in priority order) is "
            "submitted already, pinned to the ranks of a running job of the same "
            "shape with an afterany dependency on it, so Flux starts it the moment "
            "that job ends instead of after a round trip through Snakemake.",
            "env_var": False,
            "required": False,
        },
    )
    flux_keep_inactive: int = field(
        default=1000,
        metadata={
            "help": "flux backend: successful inactive Flux jobs of this run kept in "
            "the instance (the newest); older ones are purged as the run goes, so "
            "that Flux's throughput does not fall over tens of thousands of jobs. "
            "Failed jobs are always kept for inspection. -1 never purges.",
            "env_var": False,
            "required": False,
        },
    )
    flux_pmi: Optional[str] = field(  # noqa: UP045
        default=None,
        metadata={
            "help": "flux backend: PMI for multi-task jobs (job shell option 'pmi', "
            "e.g. 'simple', 'pmi2', 'cray-pals', 'pmix'). Default: Flux's "
            "(simple, which MPICH and Cray MPICH use).",
            "env_var": False,
            "required": False,
        },
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
        if self.flux_urgency is not None and not 0 <= self.flux_urgency <= 31:
            raise SettingsError(
                "flux_urgency", self.flux_urgency, "is outside 0-31", "give 0 (hold) to 31"
            )
        if self.flux_reserve_cores < 0:
            raise SettingsError(
                "flux_reserve_cores", self.flux_reserve_cores, "is negative", "give 0 or more"
            )
        if self.flux_keep_inactive < -1:
            raise SettingsError(
                "flux_keep_inactive",
                self.flux_keep_inactive,
                "is below -1",
                "give a number of jobs to keep, or -1 to never purge",
            )
        if self.deadline is not None:
            from .deadline import parse_deadline

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
