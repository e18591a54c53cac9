"""Find a real Flux for the contract tests, or say why there is none.

Flux is not in the package registries; the tests run when

* the ``flux`` Python bindings import and ``FLUX_URI`` names a running
  instance (tests run inside it), or
* a ``flux`` command is on PATH, or installed under ``$MATENSEMBLE_FLUX_PREFIX``
  or ``/opt/flux`` (where ``../shared/tools/install-flux.sh`` and the images put
  it): each test starts its own instance with ``flux start --test-size=N``.

Where Flux was installed for the run on purpose (CI sets
``MATENSEMBLE_REQUIRE_FLUX=1``), a Flux test that skips fails instead
(``tests/conftest.py``), so that the Flux path never drops out silently.
"""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FLUX_PREFIXES = (os.environ.get("MATENSEMBLE_FLUX_PREFIX", ""), "/opt/flux")


@functools.cache
def flux_command() -> str | None:
    """The ``flux`` command: on PATH, else under a known installation prefix."""
    found = shutil.which("flux")
    if found:
        return found
    for prefix in filter(None, FLUX_PREFIXES):
        candidate = Path(prefix) / "bin" / "flux"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


@functools.cache
def flux_pythonpath() -> str | None:
    """The PYTHONPATH under which the flux bindings import (from `flux env`)."""
    flux = flux_command()
    if flux is None:
        return None
    out = subprocess.run([flux, "env"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("export PYTHONPATH="):
            return shlex.split(line.split("=", 1)[1])[0]
    return None


@functools.cache
def skip_reason() -> str | None:
    if flux_command() is None:
        return (
            "no Flux: no 'flux' command on PATH, in $MATENSEMBLE_FLUX_PREFIX/bin or "
            "/opt/flux/bin (flux-core is not installed)"
        )
    probe = subprocess.run(
        [sys.executable, "-c", "import flux, flux.job"],
        env=flux_env(),
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return f"no Flux: the flux Python bindings do not import ({probe.stderr.strip()[-200:]})"
    return None


def flux_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    flux = flux_command()
    if flux:  # scripts inside the instance call `flux ...` by name
        env["PATH"] = os.pathsep.join((str(Path(flux).parent), env.get("PATH", "")))
    path = flux_pythonpath()
    if path:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (path, env.get("PYTHONPATH")) if p)
    env.update(extra or {})
    return env


requires_flux = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")


def in_flux(
    command: list[str], size: int = 3, scheduler: str = "default", options: tuple[str, ...] = ()
) -> list[str]:
    """``command`` run inside a new test instance of ``size`` ranks
    (``options``: more ``flux start`` options).

    ``scheduler="simple"`` swaps Fluxion (if loaded) for sched-simple.
    """
    script = shlex.join(command)
    if scheduler == "simple":
        script = (
            "if flux module list | grep -q sched-fluxion-qmanager; then "
            "flux module remove sched-fluxion-qmanager && "
            "flux module remove sched-fluxion-resource && flux module load sched-simple; fi; "
            + script
        )
    return [
        flux_command() or "flux",
        "start",
        f"--test-size={size}",
        *options,
        "bash",
        "-c",
        script,
    ]


def run_in_flux(
    command: list[str],
    cwd: Path,
    size: int = 3,
    timeout: float = 300,
    scheduler: str = "default",
    options: tuple[str, ...] = (),
) -> subprocess.CompletedProcess:
    return subprocess.run(
        in_flux(command, size, scheduler, options),
        cwd=cwd,
        env=flux_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )


FLUXION_MISSING = "no Fluxion: the Flux test instance loads no sched-fluxion-qmanager"


def scheduler_params() -> list:
    """``scheduler`` parameters: sched-simple always, Fluxion where it is installed
    (skipped with the reason, not left out, where it is not)."""
    fluxion = skip_reason() is None and fluxion_available()
    return [
        "simple",
        pytest.param(
            "fluxion",
            marks=pytest.mark.skipif(not fluxion, reason=skip_reason() or FLUXION_MISSING),
        ),
    ]


@functools.cache
def fluxion_available() -> bool:
    flux = flux_command()
    if flux is None:
        return False
    out = subprocess.run(
        [flux, "start", "--test-size=1", "flux", "module", "list"],
        capture_output=True,
        text=True,
        env=flux_env(),
    ).stdout
    return "sched-fluxion-qmanager" in out
