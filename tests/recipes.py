"""The launch recipes of the docs, README and profiles, read so that tests run them
as written (``<!-- recipe: NAME -->`` before a bash block in markdown; ``# recipe:
NAME`` and ``#   `` lines in a profile's comments)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]

#: Every launch recipe, and the files that must give it (others may too).
RECIPES = {
    "flux": ["README.md", "docs/clusters.md", "docs/quickstart.md", "flux-allocation"],
    "slurm": ["README.md", "docs/clusters.md", "docs/quickstart.md", "flux-allocation"],
    "slurm-image": ["docs/clusters.md", "docs/images.md", "flux-allocation"],
    "frontier": ["README.md", "docs/clusters.md", "docs/images.md", "frontier"],
    "perlmutter": ["README.md", "docs/clusters.md", "docs/images.md", "perlmutter"],
}
MD_RECIPE = re.compile(r"<!-- recipe: ([a-z-]+) -->\n```bash\n(.*?)\n```", re.DOTALL)
YAML_RECIPE = re.compile(r"^# recipe: ([a-z-]+)\n((?:#   .*\n)+)", re.MULTILINE)


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
        for name, block in YAML_RECIPE.findall(path.read_text()):
            text = "\n".join(line[4:] for line in block.splitlines())
            found.setdefault(name, {})[profile] = text
    return found


def recipe_commands(name: str) -> list[str]:
    """The commands of recipe ``name`` as the README (else the docs) gives them,
    one string per command (backslash continuations joined)."""
    found = recipes()[name]
    text = found.get("README.md") or next(iter(found.values()))
    return [" ".join(c.split()) for c in text.replace("\\\n", " ").splitlines() if c.strip()]


def snakemake_of(name: str) -> str:
    """The ``snakemake ...`` command that recipe ``name`` starts inside Flux."""
    last = recipe_commands(name)[-1]
    return last[last.index("snakemake ") :]
