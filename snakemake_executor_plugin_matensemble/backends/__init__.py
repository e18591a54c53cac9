"""Backends (where jobs run) and how ``--matensemble-backend`` picks one."""

from __future__ import annotations

from .base import Backend, JobFinished, JobStarted, JobStatus, LaunchError, LaunchSpec
from .local import LocalBackend
from .selection import FluxCheck, create_backend, flux_availability

__all__ = [
    "Backend",
    "FluxCheck",
    "JobFinished",
    "JobStarted",
    "JobStatus",
    "LaunchError",
    "LaunchSpec",
    "LocalBackend",
    "create_backend",
    "flux_availability",
]
