"""The batch script every allocation of a campaign runs (written where the
user can read it: ``<campaign dir>/allocation.sh``)."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from .recipes import Recipe
from .schedulers import Scheduler

STEPS = "snakemake_executor_plugin_matensemble.campaign.steps"
#: what a recipe's placeholders become inside an allocation
FILLED = {"slurm": {"<cores per node>": "$SLURM_CPUS_ON_NODE"}, "flux": {}}


def snakemake_command(profile: str | Path, snakemake_args: Sequence[str]) -> str:
    """The campaign's Snakemake command: the profile, the user's arguments,
    ``--rerun-incomplete`` (harmless on the first run)."""
    args = list(snakemake_args)
    if not any(a in ("--rerun-incomplete", "--ri") for a in args):
        args.append("--rerun-incomplete")
    return shlex.join(["snakemake", "--profile", str(Path(profile).resolve()), *args])


def render(
    campaign_id: str,
    directory: Path,
    scheduler: Scheduler,
    options: Sequence[str],
    recipe: Recipe,
    snakemake: str,
    workdir: Path,
) -> str:
    """The script's text."""
    output = directory / (
        "allocation-%j.out" if scheduler.name == "slurm" else "allocation-{{id}}.out"
    )
    launch = recipe.launch_lines(snakemake)
    for placeholder, value in FILLED[scheduler.name].items():
        launch = [line.replace(placeholder, value) for line in launch]
    step = shlex.join([sys.executable, "-m", STEPS])
    lines = [
        "#!/bin/bash",
        *scheduler.header(options, f"matensemble-{campaign_id}", str(output)),
        f"# Campaign {campaign_id} (matensemble-submit, recipe {recipe.name}): every allocation",
        "# runs this script. It queues the next allocation to start after this one, runs",
        "# Snakemake, then lets the next allocation run or cancels it by why the run ended",
        "# (run-end.json). matensemble-submit --status / --cancel in the submit directory.",
        f"campaign={shlex.quote(str(directory))}",
        f'{step} start "$campaign" || exit 0',
        'export MATENSEMBLE_RUN_END="$campaign/run-end.json"',
        f"cd {shlex.quote(str(workdir))}",
        *launch,
        f'{step} end "$campaign" --exit-status $?',
        "",
    ]
    return "\n".join(lines)
