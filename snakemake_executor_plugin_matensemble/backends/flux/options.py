"""Flux settings of a run, translated from the executor settings (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...errors import SettingsError

#: Job shell options the plugin sets itself, with what to do instead.
MANAGED_SHELL_OPTIONS = {
    "cpu-affinity": "the plugin binds every task to its own cores (cpu-affinity=per-task); "
    "remove it from --matensemble-flux-shell-options",
    "gpu-affinity": "the plugin binds every task to its own GPUs (gpu-affinity=per-task); "
    "remove it from --matensemble-flux-shell-options",
    "pmi": "set the PMI with --matensemble-flux-pmi instead",
}


@dataclass(frozen=True)
class FluxOptions:
    """The Flux-specific settings of a run.

    ``cancel_timeout`` and ``purge_interval`` are durations in seconds.
    """

    queue: str | None = None
    bank: str | None = None
    urgency: int | None = None
    shell_options: tuple[tuple[str, str], ...] = ()
    reserve_cores: int = 1
    pin_ranks: bool = True
    pmi: str | None = None
    lookahead: bool = True
    cancel_timeout: float = 30.0
    #: Successful inactive Flux jobs of the run kept in the instance (the
    #: newest ones); older ones are purged. None: never purge.
    keep_inactive: int | None = 1000
    #: Follow Flux's resource journal (drained / lost / returning ranks).
    follow_resources: bool = True
    #: Give each job's R in its jobspec (Flux's alloc-bypass) where this user
    #: owns the instance, so that the scheduler never matches it.
    alloc_bypass: bool = True
    #: Child instances: "off", "auto" or a count (``children.auto``).
    children: str = "auto"

    @classmethod
    def from_settings(cls, settings: Any) -> FluxOptions:
        keep = settings.flux_keep_inactive
        return cls(
            queue=settings.flux_queue,
            bank=settings.flux_bank,
            urgency=settings.flux_urgency,
            shell_options=parse_shell_options(settings.flux_shell_options),
            reserve_cores=settings.flux_reserve_cores,
            pin_ranks=not settings.flux_no_pin_ranks,
            pmi=settings.flux_pmi,
            lookahead=not settings.flux_no_lookahead,
            cancel_timeout=max(settings.kill_grace_seconds * 3, 10.0),
            keep_inactive=None if keep is None or keep < 0 else int(keep),
            alloc_bypass=not settings.flux_no_alloc_bypass,
            children=str(getattr(settings, "flux_children", "auto")),
        )


def parse_shell_options(text: str | None) -> tuple[tuple[str, str], ...]:
    """``"verbose=1,signal=SIGUSR1@60"`` -> ``(("verbose", "1"), ...)``.

    Raises :class:`SettingsError` for options the plugin manages itself
    (:data:`MANAGED_SHELL_OPTIONS`): they would silently override the binding
    or PMI the plugin chose.
    """
    if not text:
        return ()
    options = []
    for item in text.split(","):
        key, _, value = item.strip().partition("=")
        key = key.strip()
        if not key:
            continue
        if key in MANAGED_SHELL_OPTIONS:
            raise SettingsError(
                "flux_shell_options",
                text,
                f"sets the job shell option '{key}', which the plugin manages itself",
                MANAGED_SHELL_OPTIONS[key],
            )
        options.append((key, value.strip() or "1"))
    return tuple(options)
