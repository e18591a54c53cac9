"""--matensemble-backend: never silently smaller inside a Flux instance."""

from __future__ import annotations

import builtins
import sys
import types
from pathlib import Path

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


# -- every cause, through create_backend, with fake flux bindings ---------------------------

BROKER_URI = "local:///run/flux/local"


class FakeHandle:
    """``flux.Flux()``: the instance at ``FLUX_URI`` answering with its version."""

    def __init__(self, broker: str | None) -> None:
        if broker is None:  # as libflux does when nothing listens at FLUX_URI
            raise FileNotFoundError(2, "No such file or directory")
        self.broker = broker

    def attr_get(self, name: str) -> str:
        assert name == "version"
        return self.broker


def fake_bindings(
    monkeypatch, *, broker: str | None, bindings: str = "0.88.0", module_file: str = ""
) -> None:
    """Importable flux bindings (``flux/__init__.py`` at ``module_file``) of release
    ``bindings`` (their libflux-core's, as with the flux-core installation's own
    bindings), reaching an instance that runs flux-core ``broker`` (None: no
    instance answers)."""
    flux = types.ModuleType("flux")
    if module_file:
        flux.__file__ = module_file
    flux.Flux = lambda: FakeHandle(broker)  # type: ignore[attr-defined]
    flux.job = types.ModuleType("flux.job")  # type: ignore[attr-defined]
    core = types.ModuleType("flux.core")
    inner = types.ModuleType("flux.core.inner")
    inner.raw = types.SimpleNamespace(  # type: ignore[attr-defined]
        flux_core_version_string=lambda: bindings.encode()
    )
    for name, module in (
        ("flux", flux),
        ("flux.job", flux.job),
        ("flux.core", core),
        ("flux.core.inner", inner),
    ):
        monkeypatch.setitem(sys.modules, name, module)


@pytest.fixture
def flux_backend_made(monkeypatch) -> list[object]:
    """FluxBackend.from_settings records its calls instead of reaching Flux."""
    from snakemake_executor_plugin_matensemble.backends.flux import FluxBackend

    made: list[object] = []

    def from_settings(settings, run_id=""):
        made.append(settings)
        return "the flux backend"

    monkeypatch.setattr(FluxBackend, "from_settings", staticmethod(from_settings))
    return made


@pytest.mark.parametrize("choice", ["auto", "flux"])
def test_matching_bindings_inside_flux_get_the_flux_backend(monkeypatch, flux_backend_made, choice):
    monkeypatch.setenv("FLUX_URI", BROKER_URI)
    fake_bindings(monkeypatch, broker="0.88.1", bindings="0.88.0")
    assert selection.create_backend(ExecutorSettings(backend=choice)) == "the flux backend"
    assert len(flux_backend_made) == 1


@pytest.mark.parametrize("choice", ["auto", "flux"])
def test_bindings_of_another_release_than_the_instance_stop_the_run(
    monkeypatch, flux_backend_made, choice
):
    monkeypatch.setenv("FLUX_URI", BROKER_URI)
    fake_bindings(monkeypatch, broker="0.88.0", bindings="0.81.2")
    with pytest.raises(BackendUnavailableError) as raised:
        selection.create_backend(ExecutorSettings(backend=choice))
    message = str(raised.value)
    assert "bindings are release 0.81.2" in message
    assert f"the Flux instance at {BROKER_URI} runs flux-core 0.88.0" in message
    assert "pip install 'flux-python==0.88.0'" in message
    assert flux_backend_made == []


@pytest.mark.parametrize("choice", ["auto", "flux"])
def test_a_flux_uri_where_no_instance_answers_stops_the_run(monkeypatch, flux_backend_made, choice):
    monkeypatch.setenv("FLUX_URI", "local:///tmp/no-such-instance/local")
    fake_bindings(monkeypatch, broker=None)
    with pytest.raises(BackendUnavailableError) as raised:
        selection.create_backend(ExecutorSettings(backend=choice))
    message = str(raised.value)
    assert "FLUX_URI=local:///tmp/no-such-instance/local is set but no Flux instance answers" in (
        message
    )
    assert "No such file or directory" in message
    assert "unset FLUX_URI" in message
    assert flux_backend_made == []


def test_flux_by_name_without_flux_uri_says_to_run_inside_an_instance(
    monkeypatch, flux_backend_made
):
    monkeypatch.delenv("FLUX_URI", raising=False)
    fake_bindings(monkeypatch, broker="0.88.0")
    with pytest.raises(BackendUnavailableError) as raised:
        selection.create_backend(ExecutorSettings(backend="flux"))
    assert "FLUX_URI is not set" in str(raised.value)
    assert "flux alloc" in str(raised.value)
    assert flux_backend_made == []


def test_outside_flux_auto_with_importable_bindings_runs_locally(monkeypatch, flux_backend_made):
    monkeypatch.delenv("FLUX_URI", raising=False)
    fake_bindings(monkeypatch, broker="0.88.0")
    assert isinstance(selection.create_backend(ExecutorSettings()), LocalBackend)
    assert flux_backend_made == []


@pytest.mark.parametrize("choice", ["auto", "flux"])
def test_bindings_that_fail_to_import_inside_flux_stop_the_run(monkeypatch, choice):
    monkeypatch.setenv("FLUX_URI", BROKER_URI)
    bindings_fail_with(monkeypatch, ModuleNotFoundError("No module named 'flux'", name="flux"))
    with pytest.raises(BackendUnavailableError, match="the flux Python bindings do not import"):
        selection.create_backend(ExecutorSettings(backend=choice))


def pip_installed_flux_python(monkeypatch, site: Path, version: str) -> str:
    """flux-python ``version`` installed in ``site`` (on sys.path); returns the path
    of its ``flux/__init__.py``."""
    (site / "flux").mkdir(parents=True)
    (site / "flux" / "__init__.py").write_text("")
    info = site / f"flux_python-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: flux-python\nVersion: {version}\n"
    )
    monkeypatch.syspath_prepend(str(site))
    return str(site / "flux" / "__init__.py")


def test_pip_installed_bindings_of_another_release_stop_the_run(
    monkeypatch, tmp_path, flux_backend_made
):
    """flux-python 0.81.0 from PyPI (its libflux-core the cluster's 0.88.0) against
    a 0.88.0 instance: the Python side speaks 0.81's protocol."""
    monkeypatch.setenv("FLUX_URI", BROKER_URI)
    module = pip_installed_flux_python(monkeypatch, tmp_path / "site", "0.81.0")
    fake_bindings(monkeypatch, broker="0.88.0", bindings="0.88.0", module_file=module)
    with pytest.raises(BackendUnavailableError, match=r"bindings are release 0\.81\.0"):
        selection.create_backend(ExecutorSettings())
    assert flux_backend_made == []


def test_flux_env_bindings_that_shadow_an_installed_flux_python_are_theirs(
    monkeypatch, tmp_path, flux_backend_made
):
    """flux-python 0.81.0 is installed, but ``eval $(flux env)`` put the 0.88.0
    installation's own bindings first on PYTHONPATH: those are the ones used."""
    monkeypatch.setenv("FLUX_URI", BROKER_URI)
    pip_installed_flux_python(monkeypatch, tmp_path / "site", "0.81.0")
    own = tmp_path / "flux-core" / "flux" / "__init__.py"
    own.parent.mkdir(parents=True)
    own.write_text("")
    fake_bindings(monkeypatch, broker="0.88.0", bindings="0.88.0", module_file=str(own))
    assert selection.create_backend(ExecutorSettings()) == "the flux backend"
