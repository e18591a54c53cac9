"""Collect the averages of every ensemble member into one table (mean and spread over seeds)."""

import argparse
import csv
import re
import statistics
from collections import defaultdict
from pathlib import Path


def read_average(path: str) -> tuple[float, float, float]:
    """The last data line of a LAMMPS fix ave/time file: pe/atom, vol/atom, T."""
    rows = [
        line.split() for line in Path(path).read_text().splitlines() if not line.startswith("#")
    ]
    _, pe, vol, temp = map(float, rows[-1])
    return pe, vol, temp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", required=True)
    parser.add_argument("averages", nargs="+")
    args = parser.parse_args()

    by_temp = defaultdict(list)
    for path in args.averages:
        target = int(re.search(r"T(\d+)_s\d+", path).group(1))
        by_temp[target].append(read_average(path))
    with open(args.output, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(
            [
                "T_target_K",
                "members",
                "T_K",
                "pe_per_atom_eV",
                "pe_spread_eV",
                "vol_per_atom_A3",
                "vol_spread_A3",
            ]
        )
        for target in sorted(by_temp):
            pes, vols, temps = zip(*by_temp[target], strict=True)
            spread = statistics.pstdev
            writer.writerow(
                [
                    target,
                    len(pes),
                    f"{statistics.mean(temps):.1f}",
                    f"{statistics.mean(pes):.5f}",
                    f"{spread(pes):.5f}",
                    f"{statistics.mean(vols):.4f}",
                    f"{spread(vols):.4f}",
                ]
            )


if __name__ == "__main__":
    main()
