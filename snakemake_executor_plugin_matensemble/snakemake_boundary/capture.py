"""The capture of the one process Snakemake's ``shell()`` would start for a job.

:class:`CapturingSubprocess` stands in for the ``subprocess`` module inside
``snakemake.shell`` (installed by :mod:`.patches`): in a thread that is
capturing, the ``Popen`` that runs the job is recorded and not started.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class CapturedProcess:
    """The process Snakemake's ``shell()`` would have started for a job."""

    command: str
    #: the shell that runs ``command`` (``shell -c command``)
    executable: str
    #: the complete environment shell() gave the process
    env: dict[str, str]
    #: files Snakemake would delete after the job (scripts written for it)
    cleanup: list[str] = field(default_factory=list)


class _FakeProcess:
    """What shell() gets back instead of a started process: it 'ran' at once."""

    pid = -1
    returncode = 0
    stdout = None

    def wait(self, timeout: float | None = None) -> int:
        return 0

    def poll(self) -> int:
        return 0


class CapturingSubprocess:
    """Stands in for the ``subprocess`` module inside ``snakemake.shell``.

    In a thread that is capturing, the ``Popen`` that runs the job is recorded
    and not started; every other use (other threads, queries that read the
    output, such as a conda environment's Python version) goes to the real
    module.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def __getattr__(self, name: str) -> Any:
        return getattr(subprocess, name)

    @contextlib.contextmanager
    def capturing(self) -> Iterator[list[CapturedProcess | None]]:
        captured: list[CapturedProcess | None] = []
        self._local.captured = captured
        try:
            yield captured
        finally:
            self._local.captured = None

    def Popen(self, cmd: Any, *args: Any, **kwargs: Any) -> Any:
        captured = getattr(self._local, "captured", None)
        if captured is None or kwargs.get("stdout") == subprocess.PIPE:
            return subprocess.Popen(cmd, *args, **kwargs)
        if kwargs.get("shell") and isinstance(cmd, str) and not args:
            command, cleanup = _keep_long_command_script(cmd)
            captured.append(
                CapturedProcess(
                    command=command,
                    executable=kwargs.get("executable") or "/bin/sh",
                    env=dict(kwargs.get("env") or os.environ),
                    cleanup=cleanup,
                )
            )
        else:  # not a shell command line: not something the plugin can launch
            captured.append(None)
        return _FakeProcess()


_LONG_COMMAND_SCRIPT = re.compile(r"[^\s'\"]*\.snakemake/shell_tmp\.[^/\s'\"]+/script\.sh")


def _keep_long_command_script(command: str) -> tuple[str, list[str]]:
    """shell() runs a command too long for ``sh -c`` from a script that it
    deletes when the (captured) process ends: keep a copy for the real launch."""
    match = _LONG_COMMAND_SCRIPT.search(command)
    if match is None:
        return command, []
    os.makedirs(".snakemake", exist_ok=True)
    handle, copy = tempfile.mkstemp(dir=".snakemake", prefix="matensemble_sh.", suffix=".sh")
    with os.fdopen(handle, "w") as target, open(match.group(0)) as source:
        target.write(source.read())
    copy = os.path.abspath(copy)
    return command.replace(match.group(0), copy), [copy]


_SCRIPT_PATH = re.compile(r"[^\s'\"]*\.snakemake/scripts/[^\s'\")]+")


def written_scripts(command: str) -> list[str]:
    """Scripts Snakemake wrote under .snakemake/scripts for ``command``."""
    return sorted({path for path in _SCRIPT_PATH.findall(command) if os.path.isfile(path)})


def remove_files(processes: list[CapturedProcess | None]) -> None:
    """Remove what captured ``processes`` kept for a launch that will not happen."""
    for process in processes:
        for path in process.cleanup if process is not None else ():
            with contextlib.suppress(OSError):
                os.remove(path)
