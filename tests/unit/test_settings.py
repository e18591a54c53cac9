"""ExecutorSettings.check(): every value the plugin cannot use is refused with
the flag, the value and the fix, as a Snakemake ApiError (printed without a
traceback)."""

import dataclasses

import pytest
from snakemake_interface_common.exceptions import ApiError, WorkflowError

from snakemake_executor_plugin_matensemble.errors import SettingsError
from snakemake_executor_plugin_matensemble.settings import ExecutorSettings


def test_defaults_pass():
    ExecutorSettings().check()


@pytest.mark.parametrize(
    ("changes", "flag"),
    [
        ({"backend": "slurm"}, "--matensemble-backend='slurm'"),
        ({"policy": "random"}, "--matensemble-policy='random'"),
        ({"flux_urgency": 32}, "--matensemble-flux-urgency=32"),
        ({"flux_reserve_cores": -1}, "--matensemble-flux-reserve-cores=-1"),
        ({"flux_keep_inactive": -2}, "--matensemble-flux-keep-inactive=-2"),
        ({"reserve_after": -1.0}, "--matensemble-reserve-after=-1.0"),
        ({"kill_grace_seconds": -0.5}, "--matensemble-kill-grace-seconds=-0.5"),
        ({"status_interval": -1.0}, "--matensemble-status-interval=-1.0"),
        ({"deadline_margin": -5.0}, "--matensemble-deadline-margin=-5.0"),
    ],
)
def test_bad_values_name_the_flag_and_the_fix(changes, flag):
    with pytest.raises(SettingsError) as caught:
        dataclasses.replace(ExecutorSettings(), **changes).check()
    message = str(caught.value)
    assert message.startswith(flag)
    assert ". Fix: " in message
    assert "\n" not in message


def test_paths_that_cannot_be_used(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("")
    for name in ("journal_dir", "log_dir"):
        with pytest.raises(SettingsError, match="is a file, not a directory"):
            dataclasses.replace(ExecutorSettings(), **{name: str(a_file)}).check()
    with pytest.raises(SettingsError, match=r"status-file=.* is a directory"):
        ExecutorSettings(status_file=str(tmp_path)).check()
    # directories that do not exist yet are made later
    ExecutorSettings(
        journal_dir=str(tmp_path / "new"),
        log_dir=str(tmp_path / "new2"),
        status_file=str(tmp_path / "new3" / "status.json"),
    ).check()


def test_settings_errors_are_api_errors_not_workflow_errors():
    # Snakemake prints a WorkflowError with the plugin's traceback, an ApiError
    # as one "Error: ..." paragraph
    error = SettingsError("local_cores", "banana", "is bad", "give 4")
    assert isinstance(error, ApiError)
    assert not isinstance(error, WorkflowError)
    assert str(error) == "--matensemble-local-cores='banana' is bad. Fix: give 4"


def test_jobs_that_cannot_run_are_listed_as_an_api_error():
    from snakemake_executor_plugin_matensemble.errors import JobsCannotRunError

    error = JobsCannotRunError(["rule 'a': resource gpu=1 ... Fix: x", "rule 'b': ... Fix: y"])
    assert isinstance(error, ApiError)
    assert not isinstance(error, WorkflowError)
    assert str(error).splitlines()[1:] == [
        "  - rule 'a': resource gpu=1 ... Fix: x",
        "  - rule 'b': ... Fix: y",
    ]
