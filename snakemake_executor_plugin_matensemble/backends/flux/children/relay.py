"""Opening a child instance from the Snakemake process through the carrier.

A child is reached at ``ssh://matensemble-rank-<R>/<child's local socket>``
with ``FLUX_SSH`` naming a small script that runs :mod:`.carrier` against the
enclosing instance: Flux's own ssh connector and ``flux relay`` do the rest
(see docs/backends.md, "Child instances", for why this path and its cost).

``FLUX_SSH`` is read by the connector each time a handle opens, in whichever
thread opens it (a ``FluxExecutor`` opens its own handle in its own thread), so
:func:`install_carrier` sets it once, process-wide; hosts that are not rank
hosts still go to the ssh command it replaced.
"""

from __future__ import annotations

import os
import shlex
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from . import carrier
from .carrier import rank_host

# Run by path, not as a module: the carrier needs only the standard library and
# flux, and importing the plugin package would slow every relay's start.
CARRIER_FILE = Path(carrier.__file__)
_install_lock = threading.Lock()
#: Where the ``FLUX_SSH`` that the first carrier replaced is kept (a later carrier
#: must fall back to it, not to an earlier carrier).
ORIGINAL_FLUX_SSH = "MATENSEMBLE_ORIGINAL_FLUX_SSH"


def child_uri(parent_rank: int, local_path: str) -> str:
    """The URI that reaches a child whose first broker runs on enclosing rank
    ``parent_rank`` and listens on ``local_path`` there."""
    if not local_path.startswith("/"):
        raise ValueError(f"a child's local socket path must be absolute, got {local_path!r}")
    return f"ssh://{rank_host(parent_rank)}{local_path}"


def local_path_of(uri: str) -> str:
    """The socket path of a ``local://`` or ``ssh://`` URI."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("local", "ssh") or not parsed.path:
        raise ValueError(f"not a local:// or ssh:// Flux URI: {uri!r}")
    return parsed.path


def write_carrier_script(directory: Path, parent_uri: str, fallback: str | None = None) -> Path:
    """An executable ``FLUX_SSH`` script that carries to ``parent_uri``'s ranks.

    It runs this interpreter with this process's module path, so the carrier
    imports the same flux bindings as the process that opens children.
    """
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "flux-ssh-carrier"
    fallback = fallback or original_flux_ssh()
    pythonpath = os.pathsep.join(p for p in sys.path if p)
    lines = [
        "#!/bin/sh",
        "# written by snakemake-executor-plugin-matensemble: FLUX_SSH for child instances",
        f"PYTHONPATH={shlex.quote(pythonpath)} exec {shlex.quote(sys.executable)} "
        f"{shlex.quote(str(CARRIER_FILE))} --parent {shlex.quote(parent_uri)} "
        f'--fallback {shlex.quote(fallback)} "$@"',
    ]
    script.write_text("\n".join(lines) + "\n")
    script.chmod(0o700)
    return script


def original_flux_ssh() -> str:
    """The ssh command in use before any carrier was installed (default ``ssh``)."""
    if ORIGINAL_FLUX_SSH in os.environ:  # "" : none was set
        return os.environ[ORIGINAL_FLUX_SSH] or "ssh"
    return os.environ.get("FLUX_SSH") or "ssh"


def install_carrier(script: Path) -> None:
    """Make ``script`` this process's ``FLUX_SSH`` (children are opened through it)."""
    with _install_lock:
        os.environ.setdefault(ORIGINAL_FLUX_SSH, os.environ.get("FLUX_SSH", ""))
        os.environ["FLUX_SSH"] = str(script)


def open_child(uri: str) -> Any:
    """A ``flux.Flux`` handle on the child at ``uri`` (through the carrier)."""
    import flux

    if urlparse(uri).scheme == "ssh" and "FLUX_SSH" not in os.environ:
        raise RuntimeError(
            f"cannot open {uri}: FLUX_SSH is not set; call install_carrier() with a script "
            "from write_carrier_script() first"
        )
    return flux.Flux(uri)


def job_environment(environment: Mapping[str, str] | None) -> dict[str, str] | None:
    """A job's environment without the carrier: ``FLUX_SSH`` as it was before
    :func:`install_carrier` (the run's environment was read after it)."""
    if environment is None or ORIGINAL_FLUX_SSH not in environment:
        return environment if environment is None else dict(environment)
    cleaned = dict(environment)
    original = cleaned.pop(ORIGINAL_FLUX_SSH)
    if original:
        cleaned["FLUX_SSH"] = original
    else:
        cleaned.pop("FLUX_SSH", None)
    return cleaned
