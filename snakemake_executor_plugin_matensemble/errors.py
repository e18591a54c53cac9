"""Errors that tell the user what is wrong, where, and how to fix it."""

from __future__ import annotations

from snakemake_interface_common.exceptions import WorkflowError


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


class SettingsError(WorkflowError):
    """An executor setting has a value the plugin cannot use."""

    def __init__(self, setting: str, value: object, problem: str, fix: str):
        self.setting = setting
        super().__init__(
            f"--matensemble-{setting.replace('_', '-')}={value!r} {problem}. Fix: {fix}"
        )


class BackendUnavailableError(WorkflowError):
    """The requested backend cannot be used on this machine."""
