"""--matensemble-backend: never silently smaller inside a Flux instance."""

from __future__ import annotations

import builtins

import pytest

from snakemake_executor_plugin_matensemble.backends import LocalBackend, selection
from snakemake_executor_plugin_matensemble.errors import BackendUnavailableError
from snakemake_executor_plugin_matensemble.settings import ExecutorSettings

REAL_IMPORT = builtins.__import__


def bindings_fail_with(monkeypatch, error: ImportError) -> None:
    """``import flux`` raises ``error`` (as it does when libflux-core is not found)."""

    def fake_import(name, *args, **kwargs):
        if name == "flux" or name.startswith("flux."):
            raise error
        return REAL_IMPORT(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)


LIB_MISSING = ImportError("libflux-core.so.2: cannot open shared object file: No such file")


def test_inside_flux_unusable_bindings_stop_the_run_with_the_fix(monkeypatch):
    monkeypatch.setenv("FLUX_URI", "local:///run/flux/local")
    bindings_fail_with(monkeypatch, LIB_MISSING)
    with pytest.raises(BackendUnavailableError) as raised:
        selection.create_backend(ExecutorSettings())
    message = str(raised.value)
    assert "inside a Flux instance" in message
    assert "libflux-core.so.2" in message
    assert "LD_LIBRARY_PATH=" in message
    assert "--matensemble-backend local" in message


def test_outside_flux_auto_falls_back_to_the_local_backend(monkeypatch):
    monkeypatch.delenv("FLUX_URI", raising=False)
    bindings_fail_with(monkeypatch, LIB_MISSING)
    assert isinstance(selection.create_backend(ExecutorSettings()), LocalBackend)


def test_local_by_name_runs_locally_even_inside_flux(monkeypatch):
    monkeypatch.setenv("FLUX_URI", "local:///run/flux/local")
    bindings_fail_with(monkeypatch, LIB_MISSING)
    backend = selection.create_backend(ExecutorSettings(backend="local"))
    assert isinstance(backend, LocalBackend)


def test_flux_by_name_outside_flux_is_refused(monkeypatch):
    monkeypatch.delenv("FLUX_URI", raising=False)
    bindings_fail_with(monkeypatch, ModuleNotFoundError("No module named 'flux'", name="flux"))
    with pytest.raises(BackendUnavailableError, match="--matensemble-backend flux was requested"):
        selection.create_backend(ExecutorSettings(backend="flux"))


def test_a_missing_dependency_of_the_bindings_names_it(monkeypatch):
    monkeypatch.setenv("FLUX_URI", "local:///run/flux/local")
    bindings_fail_with(monkeypatch, ModuleNotFoundError("No module named 'ply'", name="ply"))
    with pytest.raises(BackendUnavailableError, match="pip install ply"):
        selection.create_backend(ExecutorSettings())


@pytest.mark.parametrize(
    ("broker", "bindings", "usable"),
    [
        ("0.88.0", "0.88.0", True),
        ("0.88.1", "0.88.0", True),
        ("0.88.0-14-g1a2b3c", "0.88.0", True),
        ("0.88.0", "0.81.0", False),
        ("0.89.0", "0.88.0", False),
    ],
)
def test_bindings_must_be_the_brokers_release(broker, bindings, usable):
    check = selection._version_check("local:///x", broker, bindings)
    assert check.usable is usable
    if not usable:
        assert f"flux-python=={broker}" in check.fix
        assert bindings in check.reason
