"""Snakemake's own executor-plugin test suite, run with this executor."""

from snakemake.common.tests import TestWorkflowsLocalStorageBase

from snakemake_executor_plugin_matensemble import ExecutorSettings


class TestSnakemakeWorkflows(TestWorkflowsLocalStorageBase):
    __test__ = True

    def get_executor(self) -> str:
        return "matensemble"

    def get_executor_settings(self) -> ExecutorSettings:
        return ExecutorSettings(backend="local")
