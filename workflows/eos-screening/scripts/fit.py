"""Birch-Murnaghan fit of E(V): equilibrium volume, lattice constant, bulk modulus."""

import argparse
import json

from ase.eos import EquationOfState
from ase.units import GPa


def load(path: str) -> dict:
    with open(path) as stream:
        return json.load(stream)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--metal", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("points", nargs="+")
    args = parser.parse_args()

    points = sorted((load(p) for p in args.points), key=lambda p: p["strain"])
    volumes = [p["volume_per_atom"] for p in points]
    energies = [p["energy_per_atom"] for p in points]
    eos = EquationOfState(volumes, energies, eos="birchmurnaghan")
    v0, e0, bulk_modulus = eos.fit()
    result = {
        "metal": args.metal,
        "v0_per_atom_A3": v0,
        "e0_per_atom_eV": e0,
        "a0_A": (4 * v0) ** (1 / 3),  # 4 atoms per conventional fcc cell
        "bulk_modulus_GPa": bulk_modulus / GPa,
        "n_points": len(points),
    }
    with open(args.output, "w") as stream:
        json.dump(result, stream, indent=1)


if __name__ == "__main__":
    main()
