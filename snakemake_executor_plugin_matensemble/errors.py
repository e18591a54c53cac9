"""Errors that tell the user what is wrong, where, and how to fix it."""

from __future__ import annotations

from snakemake_interface_common.exceptions import ApiError, WorkflowError


class InvalidRequestError(WorkflowError):
    """A job's resources cannot be turned into a request for the allocation.

    The message always names the rule (or group), the resource field, the value
    that was given and what to do about it.
    """

    def __init__(self, where: str, field: str, value: object, problem: str, fix: str):
        self.where = where
        self.field = field
        self.value = value
        self.problem = problem
        self.fix = fix
        super().__init__(f"{where}: resource {field}={value!r} {problem}. Fix: {fix}")


class UsageError(ApiError):
    """A mistake in how snakemake was called (a setting, a missing backend).

    Based on Snakemake's :class:`ApiError`, not :class:`WorkflowError`: Snakemake
    prints an ``ApiError`` as one ``Error: <message>`` paragraph, while it prints
    every ``WorkflowError`` with the plugin's internal traceback, which says
    nothing to a user who only mistyped a flag.
    """


def flag(setting: str) -> str:
    """``local_cores`` -> ``--matensemble-local-cores`` (the command-line flag)."""
    return f"--matensemble-{setting.replace('_', '-')}"


class SettingsError(UsageError):
    """An executor setting has a value the plugin cannot use.

    The message names the flag, the value, the problem and the fix, on one line.
    """

    def __init__(self, setting: str, value: object, problem: str, fix: str):
        self.setting = setting
        self.value = value
        super().__init__(f"{flag(setting)}={value!r} {problem}. Fix: {fix}")


class BackendUnavailableError(UsageError):
    """The requested backend cannot be used on this machine."""


class JobsCannotRunError(UsageError):
    """Jobs of the DAG ask for what the allocation cannot give (found before
    anything started): one line per rule, each an :class:`InvalidRequestError`
    message naming the rule, the resource, the value and the fix.

    An ``ApiError``, so Snakemake prints the list without a traceback.
    """

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__(
            "matensemble: these jobs cannot run as requested (nothing was started):\n"
            + "\n".join(f"  - {text}" for text in self.problems)
        )
