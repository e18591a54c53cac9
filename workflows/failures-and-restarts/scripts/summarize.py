"""Energies of the relaxed clusters (and which attempt produced each)."""

import argparse
import csv
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--csv", required=True)
    parser.add_argument("--plot", required=True)
    parser.add_argument("results", nargs="+")
    args = parser.parse_args()

    rows = []
    for path in args.results:
        with open(path) as stream:
            rows.append(json.load(stream))
    rows.sort(key=lambda r: r["member"])
    with open(args.csv, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["member", "attempt", "start_energy_eV", "relaxed_energy_eV"])
        for r in rows:
            writer.writerow(
                [
                    r["member"],
                    r["attempt"],
                    f"{r['start_energy_eV']:.4f}",
                    f"{r['relaxed_energy_eV']:.4f}",
                ]
            )
    fig, ax = plt.subplots(figsize=(9, 4))
    members = [r["member"] for r in rows]
    ax.plot(members, [r["start_energy_eV"] for r in rows], "o", label="perturbed (start)")
    ax.plot(members, [r["relaxed_energy_eV"] for r in rows], "s", label="relaxed")
    for r in rows:
        if r["attempt"] > 1:
            ax.annotate(
                f"attempt {r['attempt']}",
                (r["member"], r["relaxed_energy_eV"]),
                textcoords="offset points",
                xytext=(0, -15),
                ha="center",
                fontsize=8,
            )
    ax.set_xlabel("ensemble member")
    ax.set_ylabel("EMT energy of Cu$_{13}$ (eV)")
    ax.set_title("Relaxed clusters (failed members left out)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.plot, dpi=120)


if __name__ == "__main__":
    main()
