"""Relax one perturbed Cu13 icosahedral cluster with EMT; fail when told to."""

import argparse
import json
import sys
import time

import numpy as np
from ase.calculators.emt import EMT
from ase.cluster import Icosahedron
from ase.optimize import BFGS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--member", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--broken", type=int, default=0)
    parser.add_argument("--transient", type=int, default=0)
    parser.add_argument("--attempt", type=int, default=1)
    parser.add_argument("--extra-seconds", type=float, default=0)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()

    print(f"member {args.member}, attempt {args.attempt}", flush=True)
    if args.transient and args.attempt == 1:
        print("simulated preemption: the node went away (this attempt fails)", file=sys.stderr)
        sys.exit(75)
    rng = np.random.default_rng(args.seed * 1000 + args.member)
    atoms = Icosahedron("Cu", noshells=2)
    atoms.rattle(stdev=0.15, seed=int(rng.integers(1 << 31)))
    if args.broken:
        atoms.positions[1] = atoms.positions[0]  # two atoms on top of each other
    distances = atoms.get_all_distances()[np.triu_indices(len(atoms), 1)]
    if distances.min() < 0.5:
        print(
            f"bad input: atoms overlap (closest pair {distances.min():.2f} Å); "
            "fix the structure of this member",
            file=sys.stderr,
        )
        sys.exit(2)
    time.sleep(args.extra_seconds)
    atoms.calc = EMT()
    start_energy = atoms.get_potential_energy()
    BFGS(atoms, logfile=None).run(fmax=0.01, steps=500)
    with open(args.output, "w") as stream:
        json.dump(
            {
                "member": args.member,
                "attempt": args.attempt,
                "start_energy_eV": start_energy,
                "relaxed_energy_eV": atoms.get_potential_energy(),
            },
            stream,
            indent=1,
        )


if __name__ == "__main__":
    main()
