"""Checkpoint: place the second round's temperatures inside the largest jump."""

import argparse
import json

from common import largest_jump, read_average


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=int, required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("averages", nargs="+")
    args = parser.parse_args()

    low, high = largest_jump([read_average(p) for p in args.averages])
    step = (high["T_target_K"] - low["T_target_K"]) / (args.points + 1)
    chosen = [round(low["T_target_K"] + step * (i + 1)) for i in range(args.points)]
    with open(args.output, "w") as stream:
        json.dump(
            {"interval_K": [low["T_target_K"], high["T_target_K"]], "temperatures": chosen},
            stream,
            indent=1,
        )


if __name__ == "__main__":
    main()
