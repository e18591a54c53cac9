"""The command line a backend runs for one Snakemake job.

Two paths:

* **direct** (plain ``shell:`` rules): the plugin prepares the job as Snakemake
  does (output/log directories, stale outputs removed, protected outputs
  checked) and launches the rule's shell command itself, formatted exactly as
  Snakemake's ``shell()`` formats it (same namespace, quoting, shell
  executable, strict-mode prefix, ``shell.prefix()``/``shell.suffix()``, thread
  and tmpdir environment variables). No Snakemake process per job.
* **snakemake** (everything else): Snakemake's standard remote job command
  (``python -m snakemake --target-jobs ... --mode remote``), restricted to the
  cores the packer gave it (``--cores N`` instead of Snakemake's ``all``).

Snakemake's checks after the job (outputs present, touch, temp, protected,
metadata, retries, checkpoints) run in the main process for both paths.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

from snakemake_interface_executor_plugins.settings import DeploymentMethod

log = logging.getLogger("snakemake.logging.matensemble.command")

#: Snakemake's limit for ``sh -c <command>``; longer commands go into a script.
MAX_ARG_LEN = 16 * 4096 - 1
#: Resource a rule sets to 0 to always run through a per-job Snakemake process.
OPT_OUT_RESOURCE = "matensemble_direct"
#: Environment variables Snakemake's shell() sets to the job's threads.
THREAD_VARS = (
    "OMP_NUM_THREADS",
    "GOTO_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
TMPDIR_VARS = ("TMPDIR", "TMP", "TEMPDIR", "TEMP")


@dataclass(frozen=True)
class JobCommand:
    """A shell command line, the shell that runs it and what it needs."""

    command: str
    shell: str = "/bin/sh"
    #: "direct" (the rule's own shell command) or "snakemake" (per-job process).
    path: str = "snakemake"
    #: Variables added to the job's environment.
    env: dict[str, str] = field(default_factory=dict)
    #: Launch the command once per task (direct path, tasks > 1, no ``mpi``).
    per_task: bool = False
    #: Files to remove when the job has ended.
    cleanup: tuple[str, ...] = ()


def per_job_reason(job: Any, workflow: Any, direct_enabled: bool) -> str | None:
    """Why ``job`` must run through a per-job Snakemake process (None: it need not)."""
    if not direct_enabled:
        return "the direct shell path is turned off (--matensemble-per-job-snakemake)"
    if job.is_group():
        return "group jobs run through Snakemake"
    rule = job.rule
    for flag, what in (
        ("is_run", "a run: block"),
        ("is_script", "a script: directive"),
        ("is_notebook", "a notebook: directive"),
        ("is_wrapper", "a wrapper: directive"),
        ("is_cwl", "a cwl: directive"),
        ("is_template_engine", "a template_engine: directive"),
    ):
        if getattr(job, flag, False):
            return f"it has {what}"
    if not getattr(rule, "is_shell", False) or rule.shellcmd is None:
        return "it has no shell: command"
    if str(job.resources.get(OPT_OUT_RESOURCE, 1)).lower() in {"0", "false", "no"}:
        return f"it opts out with resources: {OPT_OUT_RESOURCE}=0"
    if job.is_shadow:
        return "it uses shadow:"
    if job.benchmark:
        return "it has a benchmark: file"
    if getattr(rule, "is_handover", False):
        return "it is a handover rule"
    if workflow.get_cache_mode(rule):
        return "it uses the between-workflow output cache"
    methods = workflow.deployment_settings.deployment_method
    if DeploymentMethod.CONDA in methods and job.conda_env_spec:
        return "it uses a conda environment (--sdm conda)"
    if DeploymentMethod.APPTAINER in methods and job.container_img_url:
        return "it runs in a container (--sdm apptainer)"
    if DeploymentMethod.ENV_MODULES in methods and job.env_modules:
        return "it loads environment modules (--sdm env-modules)"
    if any(f.is_storage for f in chain(job.input, job.output, job.log)):
        return "it reads or writes remote storage"
    if job.is_pipe or job.is_service:
        return "it has pipe or service outputs"
    return None


def shell_namespace(job: Any, workflow: Any) -> dict[str, Any]:
    """The names Snakemake's ``shell()`` formats a rule's command with.

    The Snakefile's globals, then the arguments Snakemake passes to the rule
    function (see snakemake.executors.local.run_wrapper), then the keyword
    arguments of the generated ``shell(...)`` call.
    """
    namespace = dict(workflow.globals)
    namespace.update(
        input=job.input._plainstrings(),
        output=job.output._plainstrings(),
        params=job.params,
        wildcards=job.wildcards,
        threads=job.threads,
        resources=job.resources,
        log=job.log._plainstrings(),
        rule=job.rule.name,
        conda_env=None,
        container_img=None,
        singularity_args=workflow.deployment_settings.apptainer_args,
        use_singularity=False,
        env_modules=None,
        bench_record=None,
        jobid=job.jobid,
        is_shell=True,
        bench_iteration=None,
        cleanup_scripts=workflow.execution_settings.cleanup_scripts,
        shadow_dir=None,
        edit_notebook=None,
        conda_base_path=workflow.conda_base_path,
        basedir=job.rule.basedir,
        sourcecache_path=workflow.sourcecache.cache_path,
        runtime_sourcecache_path=workflow.sourcecache.runtime_cache_path,
        runtime_paths=workflow.runtime_paths,
    )
    return namespace


def direct_shell_command(job: Any, workflow: Any, per_task: bool) -> JobCommand:
    """The rule's shell command exactly as Snakemake's ``shell()`` would run it."""
    from snakemake.shell import shell
    from snakemake.utils import format as snakemake_format

    command = snakemake_format(job.rule.shellcmd, **shell_namespace(job, workflow))
    executable = job.resources.get("shell_exec") or shell.get_executable() or "/bin/sh"
    command = " ".join(
        (shell._get_process_prefix(executable), command, shell._process_suffix)
    ).strip()
    cleanup: tuple[str, ...] = ()
    if len(command.replace("'", r"'\''")) + 2 > MAX_ARG_LEN:
        os.makedirs(".snakemake", exist_ok=True)
        handle, script = tempfile.mkstemp(dir=".snakemake", prefix="matensemble_sh.", suffix=".sh")
        with os.fdopen(handle, "w") as stream:
            print(command, file=stream)
        command = f'"{executable}" "{os.path.abspath(script)}"'
        cleanup = (script,)
    env = dict.fromkeys(THREAD_VARS, str(job.threads))
    tmpdir = job.resources.get("tmpdir")
    if tmpdir:
        env.update(dict.fromkeys(TMPDIR_VARS, str(tmpdir)))
    return JobCommand(
        command=command,
        shell=executable,
        path="direct",
        env=env,
        per_task=per_task,
        cleanup=cleanup,
    )


class CommandBuilder:
    """Chooses the path for each job and builds its command.

    Runs in Snakemake's scheduler thread (it touches the job and the DAG).
    """

    def __init__(self, executor: Any, direct_enabled: bool):
        self.executor = executor
        self.workflow = executor.workflow
        self.direct_enabled = direct_enabled
        self._announced: set[str] = set()

    def build(self, job: Any, cores: int, tasks: int, has_mpi: bool) -> JobCommand:
        reason = per_job_reason(job, self.workflow, self.direct_enabled)
        self._announce(job, reason)
        if reason is not None:
            with self.executor.cores_for_job(cores):
                return JobCommand(self.executor.format_job_exec(job))
        with self.executor.snakemake_work():
            self.workflow.async_run(job.prepare())
        return direct_shell_command(job, self.workflow, per_task=tasks > 1 and not has_mpi)

    def _announce(self, job: Any, reason: str | None) -> None:
        name = f"group {job.groupid}" if job.is_group() else job.rule.name
        if name in self._announced:
            return
        self._announced.add(name)
        if reason is None:
            log.info(f"matensemble: rule {name} runs its shell command directly.")
        else:
            log.info(f"matensemble: {name} runs through a per-job Snakemake process: {reason}.")
