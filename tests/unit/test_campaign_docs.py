"""The campaign commands of the README and docs/allocations.md, run as written
(placeholders filled) against each machine's scheduler, up to the submission;
the Frontier recipe with OLCF's Flux module gives Snakemake that Flux's bindings.
The Slurm command runs for real in tests/slurm/test_campaign.py."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from snakemake_executor_plugin_matensemble.campaign import cli

from ..flux.fluxenv import flux_command, requires_flux
from ..recipes import CAMPAIGNS, ROOT, campaign_command, campaigns, recipe_commands

FILLED = {"<project>": "prj123", "<account>_g": "m1234_g"}


def test_every_machine_has_one_campaign_command_the_same_everywhere():
    found = campaigns()
    assert set(found) == set(CAMPAIGNS), sorted(found)
    for name, required in CAMPAIGNS.items():
        assert set(required) <= set(found[name]), (name, sorted(found[name]))
        assert len(set(found[name].values())) == 1, found[name]


@pytest.fixture
def schedulers(tmp_path, monkeypatch):
    """``sbatch`` and ``flux`` that record their calls, inside a (pretend) Flux
    instance only where the test says so."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    calls = tmp_path / "calls"
    for tool, answer in (("sbatch", "42"), ("flux", "f3ABC")):
        path = bindir / tool
        path.write_text(f'#!/bin/sh\necho {tool} "$@" >> {calls}\necho {answer}\n')
        path.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}/usr/bin{os.pathsep}/bin")
    monkeypatch.delenv("FLUX_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    return calls


def documented_argv(name: str) -> list[str]:
    command = campaign_command(name)
    for placeholder, value in FILLED.items():
        command = command.replace(placeholder, value)
    argv = shlex.split(command.replace("workflows/profiles/", f"{ROOT}/workflows/profiles/"))
    assert argv[0] == "matensemble-submit", argv
    return argv[1:]


@pytest.mark.parametrize("machine", ["frontier", "perlmutter", "slurm"])
def test_the_slurm_machines_commands_write_their_recipe_and_submit(machine, schedulers, tmp_path):
    assert cli.main(["--dry-run", *documented_argv(machine)]) == 0
    (script,) = (tmp_path / ".snakemake/matensemble/campaign").glob("*/allocation.sh")
    text = script.read_text()
    srun = recipe_commands(machine)[-1].replace("<cores per node>", "$SLURM_CPUS_ON_NODE")
    launch = srun[: srun.index("snakemake ")]
    assert launch in text, text
    assert "#SBATCH -N 8\n#SBATCH -t 2:00:00\n" in text
    if machine != "slurm":
        assert "#SBATCH -A " in text
    assert "-s Snakefile --rerun-incomplete\n" in text
    assert not schedulers.exists(), "--dry-run submitted"
    # and for real (the pretend sbatch answers job 42)
    assert cli.main(documented_argv(machine)) == 0
    assert schedulers.read_text().startswith("sbatch --parsable ")


def test_the_flux_command_submits_a_flux_batch_inside_a_flux_instance(
    schedulers, tmp_path, monkeypatch
):
    monkeypatch.setenv("FLUX_URI", "local:///pretend")
    assert cli.main(documented_argv("flux")) == 0
    (script,) = (tmp_path / ".snakemake/matensemble/campaign").glob("*/allocation.sh")
    text = script.read_text()
    assert "#flux: -N 8\n#flux: -t 2h\n" in text
    assert "\nsnakemake --profile " in text
    calls = schedulers.read_text().splitlines()
    assert calls[0] == f"flux batch {script}", calls


@requires_flux
@pytest.mark.flux
def test_the_frontier_module_recipe_gives_snakemake_the_modules_flux_bindings(tmp_path):
    """The recipe's ``export PYTHONPATH=...`` with a Flux install standing for
    OLCF's module (its bin on PATH, no PYTHONPATH): the bindings found are
    that Flux's own, and import in the Python that Flux was built for."""
    commands = recipe_commands("frontier-module")
    assert commands[1] == "module load rocm hwloc/2.9.1-gpu flux"
    export = commands[2]
    assert export.startswith("export PYTHONPATH=$(flux python "), export
    assert "flux start snakemake --profile workflows/profiles/frontier " in commands[3]
    flux = Path(flux_command())
    script = f"{export}; flux python -c 'import sys; print(sys.executable)'; echo $PYTHONPATH"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = f"{flux.parent}{os.pathsep}{env['PATH']}"
    done = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    python, pythonpath = done.stdout.split()
    assert Path(pythonpath).is_relative_to(flux.parent.parent), pythonpath
    imported = subprocess.run(
        [python, "-c", "import flux, flux.job; print(flux.__file__)"],
        env={**env, "PYTHONPATH": pythonpath},
        capture_output=True,
        text=True,
    )
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.startswith(pythonpath), imported.stdout
    assert sys.version_info >= (3, 11)
