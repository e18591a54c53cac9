"""Inside (or pointed at) a real Flux instance that this Python cannot use, the
run stops before any job and says why (never the local backend on one node,
silently): bindings that do not import, bindings of another release than the
instance, a ``FLUX_URI`` where no instance answers."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ..helpers import SNAKEMAKE, write_snakefile
from .fluxenv import flux_env, requires_flux, run_in_flux

pytestmark = [requires_flux, pytest.mark.flux]

SNAKEFILE = """
rule all:
    input: "one.txt"

rule one:
    output: "one.txt"
    shell: "echo one > {output}"
"""


def snakemake(*args: str, before: str = "") -> list[str]:
    command = shlex.join([*SNAKEMAKE, "--executor", "matensemble", "-j", "unlimited", *args])
    return ["bash", "-c", f"{before}{command}"]


def snakemake_without_bindings(*args: str) -> list[str]:
    # The flux bindings come from PYTHONPATH (flux env); without it they do not import.
    return snakemake(*args, before="unset PYTHONPATH; ")


def assert_stopped_before_any_job(process: subprocess.CompletedProcess, workdir: Path) -> str:
    out = process.stdout
    assert process.returncode != 0, out[-3000:]
    assert "--matensemble-backend local" in out, out[-3000:]  # the way to run locally on purpose
    assert "rule one:" not in out, out[-3000:]  # Snakemake announces every job it runs
    assert not (workdir / "one.txt").exists()
    return out


def test_unusable_bindings_inside_flux_stop_the_run_before_any_job(tmp_path):
    write_snakefile(tmp_path, SNAKEFILE)
    process = run_in_flux(snakemake_without_bindings(), cwd=tmp_path, size=2, timeout=120)
    out = assert_stopped_before_any_job(process, tmp_path)
    assert "this is inside a Flux instance" in out, out[-3000:]
    assert "the flux Python bindings do not import" in out


def pip_flux_python(site: Path, version: str) -> None:
    """A site folder where flux-python ``version`` looks pip-installed: its
    ``flux`` package is the instance's own bindings (a link), its metadata says
    ``version``."""
    bindings = subprocess.run(
        [sys.executable, "-c", "import flux, os; print(os.path.dirname(flux.__path__[0]))"],
        env=flux_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    site.mkdir()
    (site / "flux").symlink_to(Path(bindings) / "flux")
    info = site / f"flux_python-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: flux-python\nVersion: {version}\n"
    )


def test_bindings_of_another_release_inside_flux_stop_the_run_before_any_job(tmp_path):
    """flux-python of release 0.1.0 in a real instance (whatever it runs): the
    bindings would speak another protocol than the broker."""
    write_snakefile(tmp_path / "run", SNAKEFILE)
    pip_flux_python(tmp_path / "site", "0.1.0")
    process = run_in_flux(
        snakemake(before=f"export PYTHONPATH={shlex.quote(str(tmp_path / 'site'))}:$PYTHONPATH; "),
        cwd=tmp_path / "run",
        size=1,
        timeout=120,
    )
    out = assert_stopped_before_any_job(process, tmp_path / "run")
    assert "the flux Python bindings are release 0.1.0 but the Flux instance at" in out, out[-3000:]
    assert "runs flux-core 0." in out
    assert "pip install 'flux-python==0." in out


def test_a_flux_uri_where_no_instance_answers_stops_the_run_before_any_job(tmp_path):
    """FLUX_URI names an instance that is gone (its socket removed): the bindings
    import, and connecting fails."""
    write_snakefile(tmp_path, SNAKEFILE)
    uri = f"local://{tmp_path}/gone-instance/local"
    process = subprocess.run(
        snakemake(),
        cwd=tmp_path,
        env=flux_env({"FLUX_URI": uri}),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )
    out = assert_stopped_before_any_job(process, tmp_path)
    assert f"FLUX_URI={uri} is set but no Flux instance answers there" in out, out[-3000:]
    assert "unset FLUX_URI" in out


def test_the_local_backend_inside_flux_only_by_name(tmp_path):
    write_snakefile(tmp_path, SNAKEFILE)
    process = run_in_flux(
        snakemake_without_bindings("--matensemble-backend", "local"),
        cwd=tmp_path,
        size=1,
        timeout=120,
    )
    assert process.returncode == 0, process.stdout[-3000:]
    assert (tmp_path / "one.txt").read_text() == "one\n"
