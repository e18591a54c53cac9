"""Reading the per-temperature averages written by LAMMPS (fix ave/time)."""

import itertools
import re
from pathlib import Path


def read_average(path: str) -> dict:
    rows = [
        line.split() for line in Path(path).read_text().splitlines() if not line.startswith("#")
    ]
    _, pe, vol, temp = map(float, rows[-1])
    target = int(re.search(r"T(\d+)", path).group(1))
    return {"T_target_K": target, "T_K": temp, "pe_per_atom_eV": pe, "vol_per_atom_A3": vol}


def largest_jump(points: list[dict]) -> tuple[dict, dict]:
    """The neighbouring pair (in temperature) with the largest volume jump per kelvin."""
    ordered = sorted(points, key=lambda p: p["T_target_K"])
    pairs = list(itertools.pairwise(ordered))
    return max(
        pairs,
        key=lambda ab: (
            (ab[1]["vol_per_atom_A3"] - ab[0]["vol_per_atom_A3"])
            / (ab[1]["T_target_K"] - ab[0]["T_target_K"])
        ),
    )
