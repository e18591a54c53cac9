"""Hide one Snakemake internal from the plugin, as a rename in a later Snakemake
would: the plugin's code (and its start-up probe) no longer finds it, while
Snakemake's own code, which would use the new name, still works."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

PLUGIN = "snakemake_executor_plugin_matensemble"


def _owner(owner: str) -> type:
    import snakemake.api  # noqa: F401 - Snakemake's own import order
    from snakemake.io import _IOFile
    from snakemake.jobs import Job
    from snakemake.rules import Rule

    return {"Job": Job, "Rule": Rule, "IOFile": _IOFile}[owner]


def _asked_by_plugin() -> bool:
    frame = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__") == "builtins":
        frame = frame.f_back
    return frame is not None and str(frame.f_globals.get("__name__", "")).startswith(PLUGIN)


class HiddenFromPlugin:
    """A data descriptor standing in for attribute ``name``: Snakemake reads and
    writes it as before (the original descriptor, or the instance's dict); the
    plugin gets AttributeError."""

    def __init__(self, name: str, original: Any):
        self.name = name
        self.original = original

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if _asked_by_plugin():
            raise AttributeError(f"{self.name} (hidden from the plugin)")
        if self.original is not None:
            return self.original.__get__(obj, owner)
        if obj is None:
            return self
        try:
            return obj.__dict__[self.name]
        except KeyError:
            raise AttributeError(self.name) from None

    def __set__(self, obj: Any, value: Any) -> None:
        if self.original is not None:
            self.original.__set__(obj, value)
        else:
            obj.__dict__[self.name] = value


@contextlib.contextmanager
def hidden(owner: str, name: str) -> Iterator[None]:
    """While inside, ``owner.name`` is hidden from the plugin."""
    cls = _owner(owner)
    original = cls.__dict__.get(name)
    setattr(cls, name, HiddenFromPlugin(name, original))
    try:
        yield
    finally:
        if original is None:
            delattr(cls, name)
        else:
            setattr(cls, name, original)
