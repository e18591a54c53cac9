"""The launch recipes of the docs, README and profiles, read so that tests run them
as written (``<!-- recipe: NAME -->`` before a bash block in markdown; ``# recipe:
NAME`` and ``#   `` lines in a profile's comments)."""

from __future__ import annotations

import re
from pathlib import Path

from snakemake_executor_plugin_matensemble.campaign.recipes import commands, profile_recipes

ROOT = Path(__file__).parents[1]

#: Every launch recipe, and the files that must give it (others may too).
RECIPES = {
    "flux": ["README.md", "docs/clusters.md", "docs/quickstart.md", "flux-allocation"],
    "slurm": ["README.md", "docs/clusters.md", "docs/quickstart.md", "flux-allocation"],
    "slurm-image": ["docs/clusters.md", "docs/images.md", "flux-allocation"],
    "frontier": ["README.md", "docs/clusters.md", "docs/images.md", "frontier"],
    "perlmutter": ["README.md", "docs/clusters.md", "docs/images.md", "perlmutter"],
    "frontier-module": ["docs/clusters.md", "frontier"],
}
#: Every campaign command (``<!-- campaign: NAME -->``), and the files that must give it.
CAMPAIGNS = {
    name: ["README.md", "docs/allocations.md"]
    for name in ("frontier", "perlmutter", "slurm", "flux")
}
MD_CAMPAIGN = re.compile(r"<!-- campaign: ([a-z-]+) -->\n```bash\n(.*?)\n```", re.DOTALL)
MD_RECIPE = re.compile(r"<!-- recipe: ([a-z-]+) -->\n```bash\n(.*?)\n```", re.DOTALL)


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("workflows/**/README.md")]


def profiles() -> dict[str, Path]:
    return {p.parent.name: p for p in ROOT.glob("workflows/profiles/*/config.yaml")}


def recipes() -> dict[str, dict[str, str]]:
    """Recipe name -> {where: the commands}: markdown files by their path,
    profiles by their name (their comments, with the '#   ' taken off)."""
    found: dict[str, dict[str, str]] = {}
    for path in markdown_files():
        for name, text in MD_RECIPE.findall(path.read_text()):
            where = str(path.relative_to(ROOT))
            assert where not in found.get(name, {}), f"{where} gives recipe {name} twice"
            found.setdefault(name, {})[where] = text
    for profile, path in profiles().items():
        # the parser matensemble-submit reads the profiles with (one source)
        for name, text in profile_recipes(path.read_text()).items():
            found.setdefault(name, {})[profile] = text
    return found


def recipe_commands(name: str) -> list[str]:
    """The commands of recipe ``name`` as the README (else the docs) gives them,
    one string per command (backslash continuations joined)."""
    found = recipes()[name]
    text = found.get("README.md") or next(iter(found.values()))
    return commands(text)


def campaigns() -> dict[str, dict[str, str]]:
    """Campaign name -> {markdown file: its matensemble-submit command}."""
    found: dict[str, dict[str, str]] = {}
    for path in markdown_files():
        for name, text in MD_CAMPAIGN.findall(path.read_text()):
            found.setdefault(name, {})[str(path.relative_to(ROOT))] = text.strip()
    return found


def campaign_command(name: str) -> str:
    """The ``matensemble-submit`` command of campaign ``name``, as docs/allocations.md gives it."""
    return campaigns()[name]["docs/allocations.md"]


def snakemake_of(name: str) -> str:
    """The ``snakemake ...`` command that recipe ``name`` starts inside Flux."""
    last = recipe_commands(name)[-1]
    return last[last.index("snakemake ") :]
