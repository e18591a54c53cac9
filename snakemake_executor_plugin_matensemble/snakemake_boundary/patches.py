"""Every change the plugin makes to Snakemake's modules and objects: made
here only, each undone by :func:`undo_all` (at the executor's shutdown).
docs/architecture.md lists them with why each is needed and which public hook
would replace it:

* ``snakemake.shell.sp``: ``shell()``'s ``subprocess``, capturing the job's
  process in the threads that ask (:class:`.capture.CapturingSubprocess`);
* ``snakemake.jobs.asyncio``: its ``sleep`` (the pause between a group job's
  levels) shortened;
* ``snakemake.jobs.wait_for_files``: only while a group's members are prepared;
* the workflow's ``global_resources["_cores"]``: threads lowered to one node;
* ``job._resources``: resources read early forgotten again.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import subprocess
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from .capture import CapturingSubprocess

_lock = threading.Lock()
_capturing_subprocess = CapturingSubprocess()
#: workflow global resources -> their ``_cores`` before :func:`limit_cores`
_cores_before: list[tuple[Any, Any]] = []


def shell_module() -> Any:
    """The module ``snakemake.shell`` (its name is shadowed by the class ``shell``)."""
    return importlib.import_module("snakemake.shell")


def shell_subprocess_known() -> bool:
    """``shell()``'s ``subprocess`` is the real module (or the capture of it)."""
    return shell_module().sp in (subprocess, _capturing_subprocess)


def install_capture() -> CapturingSubprocess:
    """``snakemake.shell.sp`` captures in threads that ask it to (idempotent)."""
    module = shell_module()
    with _lock:
        if module.sp is subprocess:
            module.sp = _capturing_subprocess
    return _capturing_subprocess


def _undo_capture() -> None:
    module = shell_module()
    with _lock:
        if module.sp is _capturing_subprocess:
            module.sp = subprocess


class AsyncioWithLevelPause:
    """``asyncio`` as ``snakemake.jobs`` sees it, its one ``sleep`` (the pause
    between a group job's levels) at most ``pause``."""

    def __init__(self) -> None:
        self.pause: float | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    async def sleep(self, delay: float, result: Any = None) -> Any:
        if self.pause is not None:
            delay = min(delay, self.pause)
        return await asyncio.sleep(delay, result)


group_asyncio = AsyncioWithLevelPause()


def set_level_pause(pause: float | None) -> None:
    """The pause between a group job's levels: ``pause`` s, or Snakemake's own (None)."""
    jobs_module = importlib.import_module("snakemake.jobs")
    with _lock:
        group_asyncio.pause = pause
        jobs_module.asyncio = asyncio if pause is None else group_asyncio


@contextlib.contextmanager
def waiting_only_for_outside(produced: set[str]) -> Iterator[None]:
    """While inside: ``snakemake.jobs.wait_for_files`` skips the files in
    ``produced`` (a group's own products); restored on leaving."""
    jobs_module = importlib.import_module("snakemake.jobs")
    original = jobs_module.wait_for_files

    async def wait_for_outside_files(files: Any, *args: Any, **kwargs: Any) -> Any:
        outside = [f for f in files if str(f) not in produced]
        return await original(outside, *args, **kwargs)

    jobs_module.wait_for_files = wait_for_outside_files
    try:
        yield
    finally:
        jobs_module.wait_for_files = original


def limit_cores(global_resources: Any, cores: int) -> None:
    """The workflow's ``_cores`` resource (what threads are lowered to) is ``cores``."""
    with _lock:
        if not any(resources is global_resources for resources, _ in _cores_before):
            _cores_before.append((global_resources, global_resources.get("_cores")))
    global_resources["_cores"] = cores


def _undo_cores() -> None:
    with _lock:
        saved, _cores_before[:] = list(_cores_before), []
    for resources, value in saved:
        resources["_cores"] = value


@contextlib.contextmanager
def resources_forgotten_after(job: Any) -> Iterator[None]:
    """Resources of ``job`` evaluated inside are forgotten on leaving (Snakemake
    evaluates them again, itself, when the job is ready)."""
    saved = getattr(job, "_resources", None)
    try:
        yield
    finally:
        if hasattr(job, "_resources"):
            job._resources = saved


def forget_resources(jobs: Iterable[Any]) -> None:
    """Snakemake evaluates the resources of ``jobs`` again (e.g. within a new ``_cores``)."""
    for job in jobs:
        job._resources = None


def _undo_level_pause() -> None:
    jobs_module = importlib.import_module("snakemake.jobs")
    with _lock:
        group_asyncio.pause = None
        if jobs_module.asyncio is group_asyncio:
            jobs_module.asyncio = asyncio


def undo_all() -> None:
    """Snakemake's modules and the workflow as they were before the plugin ran."""
    _undo_capture()
    _undo_level_pause()
    _undo_cores()
