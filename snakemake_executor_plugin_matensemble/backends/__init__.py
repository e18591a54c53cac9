"""Backends (where jobs run) and how ``--matensemble-backend`` picks one."""

from __future__ import annotations

from .base import Backend, JobFinished, JobStarted, LaunchError, LaunchSpec, Status
from .local import LocalBackend
from .selection import FluxCheck, create_backend, flux_availability

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
