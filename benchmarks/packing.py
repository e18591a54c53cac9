"""How full the packer keeps the machine: makespan vs. the best possible.

    uv run python benchmarks/packing.py                 # 30 jobs on 8 cores, seed 1
    uv run python benchmarks/packing.py --jobs 60 --cores 16 --seed 7

A seeded heterogeneous ensemble of sleep jobs (1-8 cores, 1-10 s) runs on the
same cores with matensemble's ``backfill`` and ``fifo`` policies (local
backend) and with Snakemake's own local executor. Sleep jobs use no CPU, so the
declared cores may exceed the machine's (the local backend shares CPUs then).

makespan = last job end - first job start (from the jobs' own timestamps);
lower bound = max(total core-seconds / cores, longest job).
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
from pathlib import Path

from _harness import fresh_workdir, table

SNAKEFILE = """
import random
_rng = random.Random({seed})
JOBS = [(_rng.randint(1, 8), _rng.randint(1, 10)) for _ in range({jobs})]

rule all:
    input: expand("t/{{i}}.txt", i=range(len(JOBS)))

rule sleeper:
    output: "t/{{i}}.txt"
    threads: lambda wc: JOBS[int(wc.i)][0]
    params: seconds=lambda wc: JOBS[int(wc.i)][1]
    shell:
        's=$(date +%s.%N); sleep {{params.seconds}}; '
        'echo "$s $(date +%s.%N) {{threads}}" > {{output}}'
"""


def ensemble(seed: int, jobs: int) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    return [(rng.randint(1, 8), rng.randint(1, 10)) for _ in range(jobs)]


def lower_bound(jobs: list[tuple[int, int]], cores: int) -> float:
    return max(sum(c * d for c, d in jobs) / cores, max(d for _, d in jobs))


def makespan(workdir: Path) -> float:
    spans = [tuple(map(float, p.read_text().split()[:2])) for p in (workdir / "t").glob("*.txt")]
    return max(e for _, e in spans) - min(s for s, _ in spans)


def run(label: str, snakefile: str, args: list[str]) -> tuple[str, float | None]:
    workdir = fresh_workdir(snakefile, label)
    process = subprocess.run(
        [sys.executable, "-m", "snakemake", "--quiet", "all", *args],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    if process.returncode != 0:
        sys.stderr.write(process.stderr[-3000:])
        return label, None
    return label, makespan(workdir)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--cores", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    jobs = ensemble(args.seed, args.jobs)
    bound = lower_bound(jobs, args.cores)
    snakefile = SNAKEFILE.format(seed=args.seed, jobs=args.jobs)
    plugin = [
        "-j",
        "unlimited",
        "--executor",
        "matensemble",
        "--matensemble-backend",
        "local",
        "--matensemble-local-cores",
        str(args.cores),
    ]
    results = [
        run("backfill", snakefile, [*plugin, "--matensemble-policy", "backfill"]),
        run("fifo", snakefile, [*plugin, "--matensemble-policy", "fifo"]),
        run("snakemake-local", snakefile, ["--cores", str(args.cores)]),
    ]
    print(
        f"{args.jobs} sleep jobs (1-8 cores, 1-10 s, seed {args.seed}) on {args.cores} cores; "
        f"total {sum(c * d for c, d in jobs)} core-s; lower bound {bound:.1f} s"
    )
    rows = [
        [label, "failed", "-"] if span is None else [label, f"{span:.1f}", f"{span / bound:.3f}"]
        for label, span in results
    ]
    print(table(rows, ["scheduler", "makespan s", "makespan / lower bound"]))


if __name__ == "__main__":
    main()
