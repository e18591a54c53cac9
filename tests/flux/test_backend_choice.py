"""Inside a real Flux instance whose bindings this Python cannot import, the run
stops before any job and says why (never the local backend on one node, silently)."""

from __future__ import annotations

import shlex

import pytest

from ..helpers import SNAKEMAKE, write_snakefile
from .fluxenv import requires_flux, run_in_flux

pytestmark = [requires_flux, pytest.mark.flux]

SNAKEFILE = """
rule all:
    input: "one.txt"

rule one:
    output: "one.txt"
    shell: "echo one > {output}"
"""


def snakemake_without_bindings(*args: str) -> list[str]:
    command = shlex.join([*SNAKEMAKE, "--executor", "matensemble", "-j", "unlimited", *args])
    # The flux bindings come from PYTHONPATH (flux env); without it they do not import.
    return ["bash", "-c", f"unset PYTHONPATH; {command}"]


def test_unusable_bindings_inside_flux_stop_the_run_before_any_job(tmp_path):
    write_snakefile(tmp_path, SNAKEFILE)
    process = run_in_flux(snakemake_without_bindings(), cwd=tmp_path, size=2, timeout=120)
    assert process.returncode != 0, process.stdout[-3000:]
    assert "this is inside a Flux instance" in process.stdout, process.stdout[-3000:]
    assert "the flux Python bindings do not import" in process.stdout
    assert "--matensemble-backend local" in process.stdout
    assert not (tmp_path / "one.txt").exists()


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
