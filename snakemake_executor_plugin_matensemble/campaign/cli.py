"""``matensemble-submit``: submit a campaign, show it (``--status``), end it
(``--cancel``).

    matensemble-submit --profile workflows/profiles/frontier -N 8 -t 2:00:00 \\
        -A <project> [--max-allocations 20] -- <snakemake arguments>
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ..observing.run_end import read_run_end
from .recipes import PLACEHOLDER, CampaignError, Recipe, choose_recipe
from .schedulers import Scheduler, detect, walltime_seconds
from .script import render, snakemake_command
from .state import CAMPAIGNS, Campaign, load, locked, newest, save
from .steps import stop

#: the deadline margin when neither the user nor the profile sets one (seconds;
#: settings.py's default of --matensemble-deadline-margin)
DEFAULT_MARGIN_S = 30.0
#: scheduler options matensemble-submit takes: option -> (Slurm's, Flux's)
OPTIONS = {
    "nodes": ("-N", "-N"),
    "time": ("-t", "-t"),
    "account": ("-A", "--setattr=system.bank"),
    "partition": ("-p", "--queue"),
    "qos": ("-q", None),
    "constraint": ("-C", "--requires"),
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="matensemble-submit",
        description="Run a Snakemake workflow to its end, allocation after allocation, "
        "from one submission (a campaign).",
        epilog="Arguments after -- go to snakemake.",
    )
    p.add_argument("--profile", help="the machine's profile (workflows/profiles/<machine>)")
    p.add_argument("-N", "--nodes", type=int, help="nodes per allocation")
    p.add_argument("-t", "--time", help="walltime per allocation (Slurm: 2:00:00; Flux: 2h)")
    p.add_argument("-A", "--account", help="account / project / bank")
    p.add_argument("-p", "--partition", help="partition (Flux: queue)")
    p.add_argument("-q", "--qos", help="quality of service (Slurm)")
    p.add_argument("-C", "--constraint", help="node constraint (Slurm -C, Flux --requires)")
    p.add_argument("--max-allocations", type=int, default=20, help="default 20")
    p.add_argument("--scheduler", default="auto", help="slurm, flux or auto (default)")
    p.add_argument("--recipe", help="the profile's recipe, where it has several")
    p.add_argument("--status", action="store_true", help="show the campaign")
    p.add_argument("--cancel", action="store_true", help="end the campaign")
    p.add_argument("--campaign", help="the campaign's directory or id (default: the newest)")
    p.add_argument("--dry-run", action="store_true", help="write the script, submit nothing")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    snakemake_args: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, snakemake_args = argv[:at], argv[at + 1 :]
    args = parser().parse_args(argv)
    try:
        if args.status:
            return show_status(campaign_dir(args.campaign))
        if args.cancel:
            return cancel(campaign_dir(args.campaign))
        return submit(args, snakemake_args)
    except CampaignError as error:
        print(f"matensemble-submit: {error}", file=sys.stderr)
        return 2


# -- submit -------------------------------------------------------------------------------
def submit(args: argparse.Namespace, snakemake_args: list[str]) -> int:
    """Check everything, write the script, submit the first allocation."""
    if not args.profile:
        raise CampaignError("--profile is required: the machine's profile directory")
    for name, flag in (("nodes", "-N"), ("time", "-t")):
        if getattr(args, name) is None:
            raise CampaignError(f"{flag} is required ({name} of every allocation)")
    if args.max_allocations < 1:
        raise CampaignError("--max-allocations must be at least 1")
    scheduler = detect(args.scheduler)
    recipe = choose_recipe(args.profile, scheduler.name, args.recipe)
    walltime = walltime_seconds(args.time, scheduler.name)
    margin = deadline_margin(args.profile, snakemake_args)
    if walltime <= margin:
        raise CampaignError(
            f"-t {args.time}: the walltime ({walltime:.0f} s) is not longer than the "
            f"deadline margin ({margin:.0f} s, --matensemble-deadline-margin): no job could "
            "ever start; give a longer -t (or a smaller margin)"
        )
    options = scheduler_options(args, recipe, scheduler)
    campaign_id, directory = new_campaign_dir()
    script = directory / "allocation.sh"
    workdir = Path.cwd()
    text = render(
        campaign_id,
        directory,
        scheduler,
        options,
        recipe,
        snakemake_command(args.profile, snakemake_args),
        workdir,
    )
    script.write_text(text)
    script.chmod(0o755)
    campaign = Campaign(
        id=campaign_id,
        scheduler=scheduler.name,
        script=str(script),
        workdir=str(workdir),
        nodes=args.nodes,
        walltime_s=walltime,
        max_allocations=args.max_allocations,
        flux_uri=scheduler.uri,
        snakemake_dir=snakemake_directory(snakemake_args, workdir),
    )
    save(directory, campaign)
    if args.dry_run:
        print(f"matensemble-submit: wrote {script} (nothing submitted: --dry-run).")
        return 0
    with locked(directory) as campaign:
        first = scheduler.submit(str(script))
        campaign.add(first)
    print(
        f"matensemble-submit: campaign {campaign_id}: allocation 1 is {scheduler.name} job "
        f"{first}; script {script}; matensemble-submit --status to follow it."
    )
    return 0


def new_campaign_dir() -> tuple[str, Path]:
    """A new campaign's id (the time, the process, a count where one second
    saw several) and its directory, made."""
    stem = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    for count in range(1, 1000):
        campaign_id = stem if count == 1 else f"{stem}-{count}"
        directory = (CAMPAIGNS / campaign_id).resolve()
        try:
            directory.mkdir(parents=True)
        except FileExistsError:
            continue
        return campaign_id, directory
    raise CampaignError(f"cannot make a new campaign directory under {CAMPAIGNS}")


def scheduler_options(args: argparse.Namespace, recipe: Recipe, scheduler: Scheduler) -> list[str]:
    """The allocation's options: the recipe's (e.g. Perlmutter's ``-C gpu -q
    regular``), each replaced by the user's where given; a placeholder the user
    did not fill (``-A <project>``) is an error naming the option."""
    given = {}
    for name, (slurm, flux) in OPTIONS.items():
        flag = slurm if scheduler.name == "slurm" else flux
        value = getattr(args, name)
        if value is None:
            continue
        if flag is None:
            raise CampaignError(f"--{name} has no {scheduler.name} equivalent; leave it out")
        given[flag] = str(value)
    options: list[str] = []
    words = recipe.request_options()
    index = 0
    while index < len(words):
        flag = words[index]
        value = words[index + 1] if index + 1 < len(words) else None
        takes_value = value is not None and not value.startswith("-")
        index += 2 if takes_value else 1
        if flag in given:
            continue
        if flag in ("-N", "-t", "--nodes", "--time"):
            continue
        if takes_value and PLACEHOLDER.search(value):
            raise CampaignError(
                f"the {recipe.name} recipe needs {flag} {value}: give it to "
                f"matensemble-submit ({flag} ...)"
            )
        options.extend([flag, value] if takes_value else [flag])
    for flag, value in given.items():
        if flag.startswith("--setattr") or flag in ("--queue", "--requires"):
            options.append(f"{flag}={value}")
        else:
            options.extend([flag, value])
    return options


def deadline_margin(profile: str, snakemake_args: Sequence[str]) -> float:
    """``--matensemble-deadline-margin`` as the run will see it: the user's
    argument, else the profile's, else the plugin's default."""
    for index, arg in enumerate(snakemake_args):
        if arg == "--matensemble-deadline-margin" and index + 1 < len(snakemake_args):
            return float(snakemake_args[index + 1])
        if arg.startswith("--matensemble-deadline-margin="):
            return float(arg.split("=", 1)[1])
    config = (Path(profile) / "config.yaml").read_text(encoding="utf-8")
    match = re.search(r"^matensemble-deadline-margin:\s*([\d.]+)", config, re.MULTILINE)
    return float(match.group(1)) if match else DEFAULT_MARGIN_S


def snakemake_directory(snakemake_args: Sequence[str], workdir: Path) -> str | None:
    for index, arg in enumerate(snakemake_args):
        if arg in ("-d", "--directory") and index + 1 < len(snakemake_args):
            return str((workdir / snakemake_args[index + 1]).resolve())
        if arg.startswith("--directory="):
            return str((workdir / arg.split("=", 1)[1]).resolve())
    return None


# -- status and cancel --------------------------------------------------------------------
def campaign_dir(given: str | None) -> Path:
    if given:
        path = Path(given)
        directory = path if (path / "state.json").is_file() else CAMPAIGNS / given
        if not (directory / "state.json").is_file():
            raise CampaignError(f"--campaign {given}: no such campaign (no state.json)")
        return directory
    found = newest()
    if found is None:
        raise CampaignError(
            f"no campaign here ({CAMPAIGNS} has none): run matensemble-submit in the "
            "directory you submitted from, or give --campaign"
        )
    return found


def status_lines(campaign: Campaign, states: dict[str, str], now: float) -> list[str]:
    """What ``--status`` prints."""
    used = campaign.started()
    node_hours = sum(campaign.nodes * ((a.ended or now) - a.started) / 3600 for a in used)
    done = sum(a.done or 0 for a in used)
    left = next((a.left for a in reversed(used) if a.left is not None), None)
    last = next((a.reason for a in reversed(used) if a.reason), None)
    lines = [
        f"campaign {campaign.id}: {campaign.status}"
        + (f" ({campaign.reason}: {campaign.message})" if campaign.reason else ""),
        f"allocations: {len(used)} used, {len(campaign.waiting())} queued "
        f"(at most {campaign.max_allocations}); {node_hours:.2f} node-hours",
        f"jobs: {done} done, {left if left is not None else '?'} left; last reason: "
        f"{last or 'none yet'}",
    ]
    for a in campaign.allocations:
        state = states.get(a.id, a.state.upper())
        ran = ""
        if a.started is not None:
            ran = f", ran {((a.ended or now) - a.started) / 60:.1f} min"
        what = f", {a.done} done" if a.done is not None else ""
        why = f", {a.reason}" if a.reason else ""
        lines.append(f"  {a.number}. {campaign.scheduler} job {a.id}: {state}{ran}{what}{why}")
    return lines


def show_status(directory: Path) -> int:
    campaign = load(directory)
    scheduler = Scheduler(campaign.scheduler, campaign.flux_uri)
    live = [a.id for a in campaign.allocations if a.state in ("queued", "running")]
    states = scheduler.states(live)
    record = read_run_end(directory / "run-end.json")
    for line in status_lines(campaign, states, time.time()):
        print(line)
    if record is not None and record.reason == "running":
        print(f"now: run {record.run} running, journal {record.journal}")
    return 0


def cancel(directory: Path) -> int:
    """Cancel the queued allocation, stop the running one cleanly (its Snakemake
    ends as interrupted), and the campaign with them."""
    with locked(directory) as campaign:
        scheduler = Scheduler(campaign.scheduler, campaign.flux_uri)
        campaign.status = "cancelled"
        stop(campaign, scheduler, "interrupted", "cancelled with matensemble-submit --cancel")
        running = [a for a in campaign.allocations if a.state == "running"]
        for allocation in running:
            try:
                scheduler.interrupt(allocation.id)
            except RuntimeError as error:  # it ended meanwhile
                print(f"matensemble-submit: {error}", file=sys.stderr)
    stopped = ", ".join(a.id for a in running) or "none"
    print(f"matensemble-submit: campaign {campaign.id} cancelled (running allocation: {stopped}).")
    return 0
