"""Energy and volume per atom of an fcc metal at a given lattice strain (ASE EMT)."""

import argparse
import json
import os

from ase.build import bulk
from ase.calculators.emt import EMT
from ase.data import atomic_numbers, reference_states


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--metal", required=True)
    parser.add_argument("--strain", type=float, required=True)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()

    a_exp = reference_states[atomic_numbers[args.metal]]["a"]
    atoms = bulk(args.metal, "fcc", a=a_exp * (1 + args.strain), cubic=True)
    atoms.calc = EMT()
    result = {
        "metal": args.metal,
        "strain": args.strain,
        "a": a_exp * (1 + args.strain),
        "volume_per_atom": atoms.get_volume() / len(atoms),
        "energy_per_atom": atoms.get_potential_energy() / len(atoms),
        "host": os.uname().nodename,
        "cpus": sorted(os.sched_getaffinity(0)),
    }
    with open(args.output, "w") as stream:
        json.dump(result, stream, indent=1)


if __name__ == "__main__":
    main()
