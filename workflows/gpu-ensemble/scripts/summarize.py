"""Which job ran on which GPU, when, and how fast."""

import argparse
import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def node(record: dict) -> str:
    """The node a task ran on: its Flux rank where it has one (hostnames can
    repeat across nodes), else its host."""
    return record.get("node") or record["host"]


def gpu_lanes(records: list[dict]) -> dict[tuple[str, str], int]:
    """One lane per GPU of a node, keyed by (node, GPU id), numbered in order."""
    lanes = sorted({(node(r), g) for r in records for g in r["gpu_ids"]}, key=_natural)
    return {lane: i for i, lane in enumerate(lanes)}


def _natural(lane: tuple[str, str]) -> tuple:
    """rank 2 before rank 10, GPU 2 before GPU 10."""
    return tuple((int(p), "") if p.isdigit() else (-1, p) for p in (*lane[0].split(" "), lane[1]))


def lane_label(records: list[dict], node_name: str, gpu: str) -> str:
    host = next(r["host"] for r in records if node(r) == node_name)
    where = node_name if node_name == host else f"{node_name} ({host})"
    return f"{where} GPU {gpu}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--csv", required=True)
    parser.add_argument("--plot", required=True)
    parser.add_argument("tasks", nargs="+")
    args = parser.parse_args()

    records = []
    for path in args.tasks:
        with open(path) as stream:
            records.append({"task": Path(path).stem, **json.load(stream)})
    records.sort(key=lambda r: int(r["task"]))
    with open(args.csv, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["task", "host", "gpu_ids", "cpus", "device", "gflops", "node"])
        for r in records:
            writer.writerow(
                [
                    r["task"],
                    r["host"],
                    ",".join(r["gpu_ids"]) or "none",
                    ",".join(map(str, r["cpus"])),
                    r["device"],
                    r["gflops"],
                    node(r),
                ]
            )

    t0 = min(r["start"] for r in records)
    rows = gpu_lanes(records)
    fig, (ax_t, ax_g) = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [2, 1]})
    for r in records:
        for g in r["gpu_ids"]:
            y = rows[(node(r), g)]
            ax_t.barh(y, r["end"] - r["start"], left=r["start"] - t0, height=0.7, edgecolor="black")
            ax_t.text(
                r["start"] - t0 + (r["end"] - r["start"]) / 2,
                y,
                r["task"],
                ha="center",
                va="center",
            )
    ax_t.set_yticks(range(len(rows)), [lane_label(records, n, g) for n, g in rows])
    ax_t.set_xlabel("time (s)")
    ax_t.set_title("Jobs on the GPU each was given (never two at once)")
    ax_g.bar([r["task"] for r in records], [r["gflops"] for r in records])
    ax_g.set_xlabel("task")
    ax_g.set_ylabel("matrix multiply (GFLOP/s)")
    ax_g.set_title(records[0]["device"][:40])
    fig.tight_layout()
    fig.savefig(args.plot, dpi=120)


if __name__ == "__main__":
    main()
