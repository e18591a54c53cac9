"""Snakemake executor plugin ``matensemble``: pack ensembles into an allocation.

``snakemake --executor matensemble -j unlimited`` turns every Snakemake job into
a job of the allocation (a Flux job inside a Flux instance, or a pinned process
group on the local machine) with exactly the cores, GPUs, tasks, nodes and
walltime it asks for, and starts jobs as long as they fit.
"""

from importlib.metadata import version

from snakemake_interface_executor_plugins.settings import CommonSettings

from .executor import Executor
from .settings import ExecutorSettings

__all__ = ["Executor", "ExecutorSettings", "common_settings"]

__version__ = version("snakemake-executor-plugin-matensemble")

common_settings = CommonSettings(
    # Jobs run outside Snakemake's own process (as remote jobs do), so that
    # Snakemake's postprocessing, retries and incomplete markers apply as usual.
    non_local_exec=True,
    # An allocation has a shared file system: no staging, no source deployment.
    implies_no_shared_fs=False,
    job_deploy_sources=False,
    # No per-job pip installs of storage plugins.
    auto_deploy_default_storage_provider=False,
    # --envvars are handed to the backend's job environment, not written into
    # the command line (where they would show up in `ps` and Flux job specs).
    pass_envvar_declarations_to_cmd=False,
    # Outcomes are pushed by the backend as they happen; no wait before checks.
    init_seconds_before_status_checks=0,
    pass_group_args=True,
)
