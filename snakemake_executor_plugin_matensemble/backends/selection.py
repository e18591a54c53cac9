"""Which backend ``--matensemble-backend`` gets, and why.

Never silently smaller: inside a Flux instance (``FLUX_URI`` set) the run uses
Flux or stops before any job with the cause and the fix. The local backend
runs inside Flux only when it is asked for by name (``--matensemble-backend
local``); otherwise an allocation of many nodes would quietly run every job on
the one node where Snakemake runs, and ignore the allocation's end.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import BackendUnavailableError
from .base import Backend
from .local import LocalBackend

log = logging.getLogger("snakemake.logging.matensemble.backend")

FLUX_PYTHON_HINT = (
    "install flux-python with the same version as the cluster's flux-core "
    "(pip install 'flux-python==<flux --version>', or the "
    "snakemake-executor-plugin-matensemble[flux] extra), or put the flux-core "
    "installation's site-packages on PYTHONPATH (eval $(flux env)). Never install "
    "the unrelated PyPI package named 'flux-core'"
)


@dataclass(frozen=True)
class FluxCheck:
    """Whether a Flux instance can be used; if not, why and how to fix it."""

    usable: bool
    reason: str
    fix: str = ""


def inside_flux() -> bool:
    """Whether this process runs inside a Flux instance (Flux sets ``FLUX_URI``)."""
    return bool(os.environ.get("FLUX_URI"))


def flux_availability() -> FluxCheck:
    """Can the flux bindings be imported, and do they reach a matching instance?"""
    try:
        import flux
        import flux.job
    except (ImportError, OSError) as error:
        return _import_failure(error)
    uri = os.environ.get("FLUX_URI")
    if not uri:
        return FluxCheck(
            False,
            "FLUX_URI is not set, so this is not inside a Flux instance",
            "run snakemake inside 'flux alloc', 'flux batch', 'flux start' or "
            "'srun --mpi=pmi2 ... flux start'",
        )
    try:
        handle = flux.Flux()
        broker = str(handle.attr_get("version"))
    except OSError as error:
        return FluxCheck(
            False,
            f"FLUX_URI={uri} is set but no Flux instance answers there ({error})",
            "unset FLUX_URI, or run snakemake inside the instance it names",
        )
    return _version_check(uri, broker, bindings_version())


def _import_failure(error: BaseException) -> FluxCheck:
    text = str(error)
    reason = f"the flux Python bindings do not import ({text})"
    if "libflux" in text:
        lib = _flux_libdir()
        return FluxCheck(
            False,
            reason,
            "the bindings (PyPI's flux-python) load libflux-core from the loader path; "
            f"export LD_LIBRARY_PATH={lib}:$LD_LIBRARY_PATH before snakemake "
            "(the 'lib' folder of the flux-core installation that runs this instance), "
            "or use that installation's own bindings: eval $(flux env)",
        )
    missing = getattr(error, "name", None)
    if isinstance(error, ModuleNotFoundError) and missing and not missing.startswith("flux"):
        return FluxCheck(
            False,
            reason,
            f"pip install {missing} (the flux bindings need it), or install the "
            "snakemake-executor-plugin-matensemble[flux] extra, which brings it",
        )
    return FluxCheck(False, reason, FLUX_PYTHON_HINT)


def _flux_libdir() -> str:
    flux = shutil.which("flux")
    if flux is None:
        return "<flux-core prefix>/lib"
    return str(Path(flux).resolve().parent.parent / "lib")


def bindings_version() -> str:
    """The release of the flux bindings this process imports: flux-python's
    (PyPI) where the imported ``flux`` package is flux-python's own files, else
    that of the libflux-core they load (a flux-core installation's bindings,
    e.g. through ``eval $(flux env)``, which may shadow an installed flux-python)."""
    import flux

    pypi = _pypi_release_of(getattr(flux, "__file__", None))
    if pypi is not None:
        return pypi
    from flux.core.inner import raw

    version = raw.flux_core_version_string()
    return version.decode() if isinstance(version, bytes) else str(version)


def _pypi_release_of(module_file: str | None) -> str | None:
    """flux-python's version, if ``module_file`` (the imported ``flux/__init__.py``)
    is the one it installed; None if it is not installed or not the one imported."""
    try:
        distribution = importlib.metadata.distribution("flux-python")
    except importlib.metadata.PackageNotFoundError:
        return None
    if module_file is None:
        return None
    installed = Path(str(distribution.locate_file("flux/__init__.py")))
    try:
        same = installed.resolve() == Path(module_file).resolve()
    except OSError:
        return None
    return distribution.version if same else None


def _release(version: str) -> tuple[int, ...]:
    """``0.88.0-12-gabc`` -> (0, 88): releases that speak the same protocol."""
    numbers = re.findall(r"\d+", version)[:2]
    return tuple(int(n) for n in numbers)


def _version_check(uri: str, broker: str, bindings: str) -> FluxCheck:
    if _release(broker) != _release(bindings):
        return FluxCheck(
            False,
            f"the flux Python bindings are release {bindings} but the Flux instance at "
            f"{uri} runs flux-core {broker}",
            f"pip install 'flux-python=={broker}' (or use the instance's own bindings: "
            "eval $(flux env))",
        )
    return FluxCheck(True, f"a Flux instance (flux-core {broker}) is reachable at {uri}")


def create_backend(settings, run_id: str = "") -> Backend:
    """The backend ``settings.backend`` asks for (``auto`` decides and says why)."""
    choice = settings.backend
    if choice in ("auto", "flux"):
        check = flux_availability()
        if check.usable:
            from .flux import FluxBackend

            log.info(f"matensemble: using the Flux backend: {check.reason}.")
            return FluxBackend.from_settings(settings, run_id)
        if choice == "flux" or inside_flux():
            raise BackendUnavailableError(_refusal(choice, check))
        log.info(f"matensemble: using the local backend: {check.reason}.")
    return LocalBackend(
        cores=settings.local_cores,
        gpus=settings.local_gpus,
        kill_grace_seconds=settings.kill_grace_seconds,
    )


def _refusal(choice: str, check: FluxCheck) -> str:
    if choice == "flux":
        return f"--matensemble-backend flux was requested but {check.reason}. Fix: {check.fix}."
    return (
        f"this is inside a Flux instance (FLUX_URI={os.environ.get('FLUX_URI')}) but "
        f"{check.reason}, so the run would use only this node; nothing was started. "
        f"Fix: {check.fix}. (To run on this node alone on purpose: "
        "--matensemble-backend local.)"
    )
