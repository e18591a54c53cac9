"""E(V) points with their Birch-Murnaghan fits, and bulk moduli against experiment."""

import argparse
import json
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from ase.units import GPa
from table import BULK_MODULUS_EXP_GPA


def birch_murnaghan(v, e0, b0, bp, v0):
    eta = (v0 / v) ** (2 / 3)
    return e0 + 9 * v0 * b0 / 16 * ((eta - 1) ** 3 * bp + (eta - 1) ** 2 * (6 - 4 * eta))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", required=True)
    parser.add_argument("--fits", nargs="+", required=True)
    parser.add_argument("--points", nargs="+", required=True)
    args = parser.parse_args()

    points = defaultdict(list)
    for path in args.points:
        with open(path) as stream:
            point = json.load(stream)
        points[point["metal"]].append(point)
    fits = {}
    for path in args.fits:
        with open(path) as stream:
            fit = json.load(stream)
        fits[fit["metal"]] = fit

    fig, (ax_e, ax_b) = plt.subplots(1, 2, figsize=(11, 4.5))
    for metal in sorted(points):
        data = sorted(points[metal], key=lambda p: p["volume_per_atom"])
        v = np.array([p["volume_per_atom"] for p in data])
        e = np.array([p["energy_per_atom"] for p in data])
        fit = fits[metal]
        # B' = 4 is a display assumption; the fit's E0, V0, B drive the curve
        vv = np.linspace(v.min(), v.max(), 100)
        curve = birch_murnaghan(
            vv, fit["e0_per_atom_eV"], fit["bulk_modulus_GPa"] * GPa, 4.0, fit["v0_per_atom_A3"]
        )
        (line,) = ax_e.plot(vv, curve - fit["e0_per_atom_eV"], label=metal)
        ax_e.plot(v, e - fit["e0_per_atom_eV"], "o", color=line.get_color())
    ax_e.set_xlabel("volume per atom (Å$^3$)")
    ax_e.set_ylabel("E - E$_0$ per atom (eV)")
    ax_e.set_title("EMT equation of state (points) and Birch-Murnaghan fits")
    ax_e.legend()

    metals = sorted(fits)
    x = np.arange(len(metals))
    ax_b.bar(x - 0.2, [fits[m]["bulk_modulus_GPa"] for m in metals], 0.4, label="EMT fit")
    ax_b.bar(x + 0.2, [BULK_MODULUS_EXP_GPA[m] for m in metals], 0.4, label="experiment")
    ax_b.set_xticks(x, metals)
    ax_b.set_ylabel("bulk modulus B (GPa)")
    ax_b.set_title("Bulk modulus: EMT vs. experiment")
    ax_b.legend()
    fig.tight_layout()
    fig.savefig(args.output, dpi=120)


if __name__ == "__main__":
    main()
