"""The machine recipes kept in a profile's comments (``# recipe: NAME`` and the
``#   `` lines after it): the one source of launch lines shared by the README,
the docs (a test checks they agree) and ``matensemble-submit``."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

YAML_RECIPE = re.compile(r"^# recipe: ([a-z-]+)\n((?:#   .*\n)+)", re.MULTILINE)
#: a placeholder the user fills in (``<project>``, ``<cores per node>``)
PLACEHOLDER = re.compile(r"<[^<>]+>")


class CampaignError(ValueError):
    """Bad input to ``matensemble-submit``, found before anything is submitted."""


def profile_recipes(config: str) -> dict[str, str]:
    """Recipe name -> its commands (``#   `` taken off, lines as written) in a
    profile's ``config.yaml`` text."""
    return {
        name: "\n".join(line[4:] for line in block.splitlines())
        for name, block in YAML_RECIPE.findall(config)
    }


def commands(text: str) -> list[str]:
    """A recipe's commands, one string each (backslash continuations joined)."""
    joined = text.replace("\\\n", " ")
    return [" ".join(line.split()) for line in joined.splitlines() if line.strip()]


@dataclass(frozen=True)
class Recipe:
    """One machine recipe: how an allocation is asked for (``salloc ...`` or
    ``flux alloc ...``) and the commands that run inside it, the last one
    ending in ``snakemake ...``."""

    name: str
    request: str
    inside: tuple[str, ...]

    @property
    def scheduler(self) -> str:
        return "flux" if self.request.startswith("flux ") else "slurm"

    def request_options(self) -> list[str]:
        """The options of the request line (``salloc -A <project> -N 8`` ->
        ``['-A', '<project>', '-N', '8']``), up to the command it runs."""
        words = shlex.split(self.request)
        words = words[2:] if words[0] == "flux" else words[1:]
        options = []
        for word in words:
            if word in ("snakemake", "--wrap"):
                break
            options.append(word)
        return options

    def launch_lines(self, snakemake: str) -> list[str]:
        """The commands an allocation runs, the ``snakemake ...`` of the last one
        replaced by ``snakemake`` (the campaign's full Snakemake command)."""
        if self.scheduler == "flux":
            return [snakemake]
        *before, last = self.inside
        start = last.index("snakemake ")
        return [*before, last[:start] + snakemake]


def parse_recipe(name: str, text: str) -> Recipe:
    lines = commands(text)
    first = lines[0]
    if first.startswith(("flux alloc ", "flux batch ")):
        return Recipe(name, first, ())
    if not first.startswith("salloc ") or "snakemake " not in lines[-1]:
        raise CampaignError(f"recipe {name!r} neither starts with salloc nor flux alloc")
    return Recipe(name, first, tuple(lines[1:]))


def read_profile(profile: str | Path) -> dict[str, Recipe]:
    """The recipes of the profile directory ``profile``; CampaignError naming
    the fix when it is not a profile."""
    config = Path(profile) / "config.yaml"
    if not config.is_file():
        raise CampaignError(
            f"--profile {profile}: no such profile ({config} does not exist); give a "
            "profile directory such as workflows/profiles/frontier, "
            "workflows/profiles/perlmutter or workflows/profiles/flux-allocation"
        )
    found = profile_recipes(config.read_text(encoding="utf-8"))
    return {name: parse_recipe(name, text) for name, text in found.items()}


def choose_recipe(profile: str | Path, scheduler: str, name: str | None = None) -> Recipe:
    """The recipe of ``profile`` for ``scheduler`` (``slurm``, ``flux``): the one
    named ``name``, else the one of that scheduler (``slurm`` or ``flux`` where
    the profile has several)."""
    recipes = read_profile(profile)
    if name is not None:
        if name not in recipes:
            raise CampaignError(
                f"--recipe {name}: profile {profile} has no such recipe "
                f"(it has: {', '.join(sorted(recipes)) or 'none'})"
            )
        return recipes[name]
    fitting = {n: r for n, r in recipes.items() if r.scheduler == scheduler}
    if not fitting:
        raise CampaignError(
            f"--profile {profile}: no {scheduler} recipe in its config.yaml "
            f"(it has: {', '.join(sorted(recipes)) or 'none'}); use a profile with one, "
            "or --scheduler for the recipe it has"
        )
    if len(fitting) == 1:
        return next(iter(fitting.values()))
    for preferred in (scheduler, Path(profile).resolve().name):
        if preferred in fitting:  # the generic recipe, or the one named as the machine
            return fitting[preferred]
    raise CampaignError(
        f"--profile {profile} has several {scheduler} recipes ({', '.join(sorted(fitting))}); "
        "choose one with --recipe"
    )
