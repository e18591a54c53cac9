"""Both rounds in one table, with the melting temperature estimated from the fine round."""

import argparse
import csv
import json

from common import largest_jump, read_average


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--choice", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--coarse", nargs="+", required=True)
    parser.add_argument("--fine", nargs="+", required=True)
    args = parser.parse_args()

    rows = [{**read_average(p), "round": 1} for p in args.coarse]
    rows += [{**read_average(p), "round": 2} for p in args.fine]
    low, high = largest_jump(rows)
    estimate = (low["T_target_K"] + high["T_target_K"]) / 2
    with open(args.choice) as stream:
        choice = json.load(stream)
    with open(args.output, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["round", "T_target_K", "T_K", "pe_per_atom_eV", "vol_per_atom_A3"])
        for row in sorted(rows, key=lambda r: r["T_target_K"]):
            writer.writerow(
                [
                    row["round"],
                    row["T_target_K"],
                    f"{row['T_K']:.1f}",
                    f"{row['pe_per_atom_eV']:.5f}",
                    f"{row['vol_per_atom_A3']:.4f}",
                ]
            )
        writer.writerow([])
        writer.writerow(["# refined interval (K)", *choice["interval_K"]])
        writer.writerow(
            [
                "# melting estimate (K)",
                f"{estimate:.0f}",
                "+/-",
                f"{(high['T_target_K'] - low['T_target_K']) / 2:.0f}",
            ]
        )


if __name__ == "__main__":
    main()
