"""Energy and volume per atom against temperature: the jump marks melting."""

import argparse
import csv

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--table", required=True)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()

    with open(args.table) as stream:
        rows = list(csv.DictReader(stream))
    temps = [float(r["T_K"]) for r in rows]
    fig, (ax_e, ax_v) = plt.subplots(1, 2, figsize=(11, 4.5))
    ax_e.errorbar(
        temps,
        [float(r["pe_per_atom_eV"]) for r in rows],
        yerr=[float(r["pe_spread_eV"]) for r in rows],
        marker="o",
        capsize=3,
    )
    ax_e.set_xlabel("temperature (K)")
    ax_e.set_ylabel("potential energy per atom (eV)")
    ax_e.set_title("EAM Cu, NPT at 0 bar: energy")
    ax_v.errorbar(
        temps,
        [float(r["vol_per_atom_A3"]) for r in rows],
        yerr=[float(r["vol_spread_A3"]) for r in rows],
        marker="s",
        capsize=3,
        color="C1",
    )
    ax_v.set_xlabel("temperature (K)")
    ax_v.set_ylabel("volume per atom (Å$^3$)")
    ax_v.set_title("EAM Cu, NPT at 0 bar: volume (jump = melting)")
    fig.tight_layout()
    fig.savefig(args.output, dpi=120)


if __name__ == "__main__":
    main()
