"""Backends (where jobs run) and how ``--matensemble-backend`` picks one."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from ..errors import BackendUnavailableError
from .base import Backend, JobFinished, JobStarted, LaunchError, LaunchSpec, Status
from .local import LocalBackend

log = logging.getLogger("snakemake.logging.matensemble.backend")

__all__ = [
    "Backend",
    "FluxCheck",
    "JobFinished",
    "JobStarted",
    "LaunchError",
    "LaunchSpec",
    "LocalBackend",
    "Status",
    "create_backend",
    "flux_availability",
]

FLUX_PYTHON_HINT = (
    "install flux-python with the same version as the cluster's flux-core "
    "(pip install 'flux-python==<flux --version>', or the "
    "snakemake-executor-plugin-matensemble[flux] extra), or put the flux-core "
    "installation's site-packages on PYTHONPATH. Never install the unrelated PyPI "
    "package named 'flux-core'"
)


@dataclass(frozen=True)
class FluxCheck:
    """Whether a Flux instance can be used; if not, why and how to fix it."""

    usable: bool
    reason: str
    fix: str = ""


def flux_availability() -> FluxCheck:
    try:
        import flux
        import flux.job
    except ImportError as error:
        return FluxCheck(
            False, f"the flux Python bindings do not import ({error})", FLUX_PYTHON_HINT
        )
    uri = os.environ.get("FLUX_URI")
    if not uri:
        return FluxCheck(
            False,
            "FLUX_URI is not set, so this is not inside a Flux instance",
            "run snakemake inside 'flux alloc', 'flux batch', 'flux start' or "
            "'srun ... flux start'",
        )
    try:
        flux.Flux()  # connects (closed when collected)
    except OSError as error:
        return FluxCheck(
            False,
            f"FLUX_URI={uri} is set but no Flux instance answers there ({error})",
            "unset FLUX_URI, or run snakemake inside the instance it names",
        )
    return FluxCheck(True, f"a Flux instance is reachable at {uri}")


def create_backend(settings, run_id: str = "") -> Backend:
    """The backend ``settings.backend`` asks for (``auto`` decides and says why)."""
    choice = settings.backend
    if choice in ("auto", "flux"):
        check = flux_availability()
        if check.usable:
            from .flux import FluxBackend

            log.info(f"matensemble: using the Flux backend: {check.reason}.")
            return FluxBackend.from_settings(settings, run_id)
        if choice == "flux":
            raise BackendUnavailableError(
                f"--matensemble-backend flux was requested but {check.reason}. Fix: {check.fix}."
            )
        log.info(f"matensemble: using the local backend: {check.reason}.")
    return LocalBackend(
        cores=settings.local_cores,
        gpus=settings.local_gpus,
        kill_grace_seconds=settings.kill_grace_seconds,
    )
