"""Bash pieces for real-Flux tests that act on a running snakemake: ONE place for
starting snakemake in the background, waiting until Flux runs its jobs, and
interrupting it (or the instance, or a rank) at that moment."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

from ..helpers import SNAKEMAKE
from .fluxenv import flux_command, flux_env

DUMP = str(Path(__file__).with_name("flux_dump_jobs.py"))


def snakemake_command(*args: str) -> str:
    return shlex.join([*SNAKEMAKE, "--executor", "matensemble", "-j", "unlimited", *args])


def wait_running(count: int, uri: str = "", tries: int = 150) -> str:
    """Wait (up to ``tries`` x 0.2 s) until Flux runs at least ``count`` jobs
    (of the instance at ``uri``, a shell expression, if given)."""
    env = f"FLUX_URI={uri} " if uri else ""
    return (
        f"for i in $(seq 1 {tries}); do "
        f"[ $({env}flux jobs -n -f running 2>/dev/null | wc -l) -ge {count} ] && break; "
        "sleep 0.2; done; "
    )


def interrupt_script(
    command: str,
    *,
    running: int,
    action: str,
    log: str = "snakemake.log",
    uri: str = "",
    before: str = "",
    after: str = "",
    dump: str | None = "flux-jobs.json",
) -> list[str]:
    """A ``bash -c`` command: run ``before``, start ``command`` in the background
    (job control on, so that SIGINT is not ignored as it is for background jobs
    of scripts; ``$pid`` is its process id), wait until Flux runs ``running``
    of its jobs, run ``action``, wait for snakemake (its exit status in
    ``rc.txt``), run ``after`` and dump every Flux job to ``dump``."""
    env = f"FLUX_URI={uri} " if uri else ""
    script = (
        f"set -m; {before}{env}{command} > {log} 2>&1 & pid=$!; "
        + wait_running(running, uri)
        + f"{action}; wait $pid; echo $? > rc.txt"
    )
    if after:
        script += f"; {after}"
    if dump:
        script += f"; {sys.executable} {DUMP} {dump}"
    return ["bash", "-c", script]


def declared_resources(workdir: Path, hosts: str, cores: int, gpus: int = 0) -> tuple[str, ...]:
    """``flux start`` options for ranks that look like the nodes ``hosts`` (one per
    rank), each with ``cores`` cores and ``gpus`` GPUs, whatever this machine has
    (``resource.noverify``): a test's instance is the same on any machine."""
    resources = workdir / "R.json"
    command = [flux_command() or "flux", "R", "encode", f"--hosts={hosts}"]
    command += [f"--cores=0-{cores - 1}"] + ([f"--gpus=0-{gpus - 1}"] if gpus else [])
    encoded = subprocess.run(command, capture_output=True, text=True, check=True, env=flux_env())
    resources.write_text(encoded.stdout)
    return (
        f"--test-hosts={hosts}",
        "--conf=resource.noverify=true",
        f'--conf=resource.path="{resources}"',
    )
