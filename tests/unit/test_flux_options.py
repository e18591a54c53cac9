"""The Flux settings of a run (pure: backends/flux/options.py)."""

from types import SimpleNamespace

import pytest

from snakemake_executor_plugin_matensemble.backends.flux import (
    MANAGED_SHELL_OPTIONS,
    FluxOptions,
    parse_shell_options,
)
from snakemake_executor_plugin_matensemble.errors import SettingsError


def test_shell_options_parse():
    assert parse_shell_options("verbose=2, signal=SIGUSR1@60,nosetpgrp") == (
        ("verbose", "2"),
        ("signal", "SIGUSR1@60"),
        ("nosetpgrp", "1"),
    )
    assert parse_shell_options(None) == ()


@pytest.mark.parametrize("option", sorted(MANAGED_SHELL_OPTIONS))
def test_options_the_plugin_manages_are_refused_with_the_flag_and_the_fix(option):
    with pytest.raises(SettingsError) as caught:
        parse_shell_options(f"verbose=1,{option}=off")
    message = str(caught.value)
    assert "--matensemble-flux-shell-options" in message
    assert f"'{option}'" in message
    assert "Fix:" in message


def settings(**changes):
    values = dict(
        flux_queue="q",
        flux_bank=None,
        flux_urgency=None,
        flux_shell_options="verbose=1",
        flux_reserve_cores=0,
        flux_no_pin_ranks=True,
        flux_pmi="pmi2",
        flux_no_lookahead=False,
        kill_grace_seconds=1.0,
        flux_keep_inactive=50,
        flux_no_alloc_bypass=False,
    )
    values.update(changes)
    return SimpleNamespace(**values)


def test_options_from_settings():
    options = FluxOptions.from_settings(settings())
    assert options.queue == "q"
    assert options.shell_options == (("verbose", "1"),)
    assert options.pin_ranks is False
    assert options.lookahead is True
    assert options.cancel_timeout == 10.0  # never less than 10 s
    assert options.keep_inactive == 50
    assert FluxOptions.from_settings(settings(flux_keep_inactive=-1)).keep_inactive is None
    assert options.alloc_bypass is True
    assert FluxOptions.from_settings(settings(flux_no_alloc_bypass=True)).alloc_bypass is False
