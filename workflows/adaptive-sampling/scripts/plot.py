"""Volume per atom against temperature: coarse round, refined round, estimate."""

import argparse
import csv
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--table", required=True)
    parser.add_argument("--choice", required=True)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()

    with open(args.table) as stream:
        lines = list(csv.reader(stream))
    header, body = lines[0], [line for line in lines[1:] if line and not line[0].startswith("#")]
    rows = [dict(zip(header, line, strict=True)) for line in body]
    estimate = next(line for line in lines if line and line[0] == "# melting estimate (K)")
    with open(args.choice) as stream:
        low, high = json.load(stream)["interval_K"]

    fig, ax = plt.subplots(figsize=(8, 4.8))
    for rnd, marker, label in (("1", "o", "round 1 (coarse)"), ("2", "s", "round 2 (refined)")):
        sel = [r for r in rows if r["round"] == rnd]
        ax.plot(
            [float(r["T_K"]) for r in sel],
            [float(r["vol_per_atom_A3"]) for r in sel],
            marker,
            label=label,
            markersize=8 if rnd == "1" else 6,
        )
    ax.axvspan(low, high, color="grey", alpha=0.15, label="interval refined by the checkpoint")
    ax.axvline(
        float(estimate[1]),
        color="C3",
        linestyle="--",
        label=f"melting estimate {estimate[1]} ± {estimate[3]} K",
    )
    ax.set_xlabel("temperature (K)")
    ax.set_ylabel("volume per atom (Å$^3$)")
    ax.set_title("Adaptive sampling of the melting of EAM Cu (NPT, 0 bar)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(args.output, dpi=120)


if __name__ == "__main__":
    main()
