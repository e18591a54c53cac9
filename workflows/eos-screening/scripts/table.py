"""Table of fitted lattice constants and bulk moduli against experiment."""

import argparse
import csv
import json

from ase.data import atomic_numbers, reference_states

# Experimental bulk moduli at room temperature (GPa), Kittel, Introduction to
# Solid State Physics, 8th ed., table 3.
BULK_MODULUS_EXP_GPA = {
    "Al": 72.2,
    "Ni": 186.0,
    "Cu": 137.0,
    "Pd": 180.8,
    "Ag": 100.7,
    "Pt": 278.3,
    "Au": 173.2,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--csv", required=True)
    parser.add_argument("--markdown", required=True)
    parser.add_argument("fits", nargs="+")
    args = parser.parse_args()

    rows = []
    for path in args.fits:
        with open(path) as stream:
            fit = json.load(stream)
        metal = fit["metal"]
        a_exp = reference_states[atomic_numbers[metal]]["a"]
        b_exp = BULK_MODULUS_EXP_GPA[metal]
        rows.append(
            {
                "metal": metal,
                "a0_A": round(fit["a0_A"], 4),
                "a0_exp_A": a_exp,
                "a0_error_pct": round(100 * (fit["a0_A"] - a_exp) / a_exp, 2),
                "B_GPa": round(fit["bulk_modulus_GPa"], 1),
                "B_exp_GPa": b_exp,
                "B_error_pct": round(100 * (fit["bulk_modulus_GPa"] - b_exp) / b_exp, 1),
            }
        )
    rows.sort(key=lambda r: r["metal"])
    with open(args.csv, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with open(args.markdown, "w") as stream:
        header = list(rows[0])
        stream.write("| " + " | ".join(header) + " |\n")
        stream.write("|" + "---|" * len(header) + "\n")
        for row in rows:
            stream.write("| " + " | ".join(str(row[h]) for h in header) + " |\n")


if __name__ == "__main__":
    main()
