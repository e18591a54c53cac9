"""ExecutorSettings.check(): every value the plugin cannot use is refused with
the flag, the value and the fix, as a Snakemake ApiError (printed without a
traceback)."""

import dataclasses
from typing import Optional

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


FIELDS = dataclasses.fields(ExecutorSettings)


def help_of(field: dataclasses.Field) -> str:
    return " ".join(field.metadata["help"].split())


@pytest.mark.parametrize("field", FIELDS, ids=[f.name for f in FIELDS])
def test_every_help_gives_the_default_and_the_allowed_values(field):
    text = help_of(field)
    assert text.endswith(f" Default: {field.metadata['default_text']}."), field.name
    if field.default not in (None, False):
        # the default stated is the real one
        value = f"{field.default:g}" if isinstance(field.default, float) else str(field.default)
        assert f"Default: {value}" in text, f"{field.name}: help does not state {value}"
    if field.type is bool:
        assert "metavar" not in field.metadata  # flags take no value
        return
    metavar = field.metadata.get("metavar")
    assert metavar, f"{field.name}: no metavar (argparse shows VALUE)"
    assert metavar != "VALUE"
    if "choices" in field.metadata:
        assert metavar == "{" + ",".join(field.metadata["choices"]) + "}"


NUMERIC = [f for f in FIELDS if f.type in (int, float, Optional[int], Optional[float])]  # noqa: UP045


@pytest.mark.parametrize("field", NUMERIC, ids=[f.name for f in NUMERIC])
def test_numeric_settings_name_their_unit_and_seconds_the_same_way(field):
    unit = field.metadata.get("unit")
    assert unit, f"{field.name}: a number with no unit"
    assert unit.split(" ")[0] in help_of(field), f"{field.name}: help does not say {unit}"
    if field.type is float:  # every float setting is a duration
        assert unit == "seconds"
    if unit == "seconds":
        assert field.metadata["metavar"] == "SECONDS"
        assert ", in seconds, " in help_of(field)
        assert help_of(field).endswith(f"Default: {field.default:g} seconds.")


def test_the_per_job_help_says_which_rules_go_per_job():
    text = help_of(next(f for f in FIELDS if f.name == "per_job_snakemake"))
    direct, per_job = text.split("; only ", 1)
    for kind in ("shell:", "script:", "notebook:", "wrapper:", "group jobs"):
        assert kind in direct
    for kind in ("run:", "shadow:", "benchmark:", "remote storage"):
        assert kind in per_job
    for kind in ("script:", "notebook:", "wrapper:"):
        assert kind not in per_job


def test_snakemake_help_shows_the_choices_and_no_bare_value():
    import argparse

    from snakemake_interface_executor_plugins.registry import ExecutorPluginRegistry

    parser = argparse.ArgumentParser()
    ExecutorPluginRegistry().get_plugin("matensemble").register_cli_args(parser, "executor")
    text = parser.format_help()
    assert "--matensemble-backend {auto,local,flux}" in text
    assert "--matensemble-reserve-after SECONDS" in text
    assert " VALUE" not in text
