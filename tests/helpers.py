"""Helpers shared by the tests: run real snakemake processes, inspect processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SNAKEMAKE = [sys.executable, "-m", "snakemake"]


@dataclass
class Run:
    returncode: int
    output: str
    workdir: Path


def write_snakefile(workdir: Path, text: str) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "Snakefile"
    path.write_text(textwrap.dedent(text))
    return path


def snakemake_args(*args: str) -> list[str]:
    return [*SNAKEMAKE, "--executor", "matensemble", "-j", "unlimited", *args]


def run_snakemake(workdir: Path, *args: str, timeout: float = 240, env=None) -> Run:
    """Run snakemake --executor matensemble in ``workdir`` and wait for it."""
    process = subprocess.run(
        snakemake_args(*args),
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    return Run(process.returncode, process.stdout, workdir)


def start_snakemake(workdir: Path, *args: str, log: Path) -> subprocess.Popen:
    handle = open(log, "w")  # noqa: SIM115 - closed by the caller via the process
    return subprocess.Popen(
        snakemake_args(*args),
        cwd=workdir,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def interrupt_snakemake(
    workdir: Path,
    *,
    ready: Callable[[], bool],
    signum: int,
    log: Path,
    delay: float = 0.0,
) -> subprocess.Popen:
    """Start snakemake, wait until ``ready()``, wait ``delay`` s, send ``signum``,
    and wait for snakemake to end (killing it if it does not)."""
    process = start_snakemake(workdir, log=log)
    try:
        assert wait_until(ready, 60), log.read_text()
        time.sleep(delay)
        os.kill(process.pid, signum)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def processes_with_marker(marker: str) -> list[int]:
    """PIDs (not zombies) whose command line contains ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if marker.encode() in cmdline and pid_alive(int(entry)):
            found.append(int(entry))
    return found
