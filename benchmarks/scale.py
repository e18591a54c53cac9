"""A large ensemble with random failures: nothing lost, plugin cost per job.

    uv run python benchmarks/scale.py                 # 10,000 jobs, 1% failing
    uv run python benchmarks/scale.py --jobs 2000
    uv run python benchmarks/scale.py --jobs 100000 --compare 10000   # end to end at 100k

Runs N trivial jobs (a seeded ~1% of them fail) with --keep-going on the local
backend, checks that every non-failing output exists and every failure was
reported, and prints the plugin's CPU per job (its own threads, from the
journal), the snakemake process's CPU per job, and the growth of peak memory
against a 100-job run of the same workflow.

``--compare M``: also run M jobs in the same invocation and print, per size,
where the snakemake process's CPU went (Snakemake's DAG, from a dry run of the
same DAG; the plugin's own work; Snakemake's per-job work inside the plugin's
calls; the rest: Snakemake's scheduler and job bookkeeping), and the M -> N
growth of CPU and memory per job.

Every run's exit code is checked (the planted failures make a run exit 1, a run
without any 0, a dry run 0): any other stops the benchmark with a non-zero exit
naming the command and the tail of its output, before any figure is printed
from it.
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import sys

from _harness import run_snakemake, run_snakemake_in, table

SNAKEFILE = """
import random
N = {jobs}
FAIL = set(random.Random({seed}).sample(range(N), N // 100))

rule all:
    input: expand("out/{{i}}.txt", i=range(N))

rule member:
    output: "out/{{i}}.txt"
    params: fail=lambda wc: int(int(wc.i) in FAIL)
    shell: "[ {{params.fail}} = 0 ] && echo {{wildcards.i}} > {{output}}"
"""


def expected_failures(jobs: int, seed: int) -> set[int]:
    return set(random.Random(seed).sample(range(jobs), jobs // 100))


def expected_exit(jobs: int, seed: int) -> int:
    """The planted failures make a run exit 1 (--keep-going); none, 0."""
    return 1 if expected_failures(jobs, seed) else 0


def require_exit(label: str, measurement, want: int) -> None:
    """Stop the benchmark (non-zero) unless the run exited ``want``: its figures
    would be of something else. Names the command and the tail of its output."""
    if measurement.returncode == want:
        return
    output = "\n".join(measurement.output_tail.splitlines()[-20:])
    sys.exit(
        f"FAILED: {label} exited {measurement.returncode}, expected {want}\n"
        f"  command: snakemake {shlex.join(measurement.command)}\n"
        f"  its output (stdout and stderr, tail):\n{output}"
    )


def run(jobs: int, seed: int, timeout: float = 3600, extra: tuple[str, ...] = ()):
    args = [
        *extra,
        "-j",
        "unlimited",
        "--executor",
        "matensemble",
        "--matensemble-backend",
        "local",
        "--keep-going",
        "--matensemble-status-interval",
        "0",
    ]
    measurement, workdir = run_snakemake_in(
        f"scale-{jobs}", SNAKEFILE.format(jobs=jobs, seed=seed), args, timeout
    )
    require_exit(f"the {jobs}-job run (in {workdir})", measurement, expected_exit(jobs, seed))
    failures = expected_failures(jobs, seed)
    present = {int(p.stem) for p in (workdir / "out").glob("*.txt")}
    missing = set(range(jobs)) - failures - present
    journal = next(workdir.glob(".snakemake/matensemble/*/journal.jsonl"))
    events = [json.loads(line) for line in journal.read_text().splitlines()]
    end = next(e for e in events if e["event"] == "end")
    reported = {e["key"] for e in events if e["event"] == "failed"}
    return measurement, missing, len(reported), len(failures), end


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument(
        "--snakemake-args",
        default="",
        help="more snakemake arguments for the plugin's runs (one string), e.g. "
        "'--max-jobs-per-timespan 100000/1s --scheduler greedy'",
    )
    parser.add_argument(
        "--compare", type=int, metavar="M", help="also run M jobs: where time goes, M -> N growth"
    )
    args = parser.parse_args()
    if args.compare:
        compare(args.compare, args.jobs, args.seed, tuple(shlex.split(args.snakemake_args)))
        return
    extra = tuple(shlex.split(args.snakemake_args))
    small, *_ = run(100, args.seed, extra=extra)
    big, missing, reported, failing, end = run(args.jobs, args.seed, extra=extra)
    # Snakemake's own memory for this DAG: a dry run builds every job but runs
    # none (its local executor re-selects among all ready jobs after every job,
    # about 1.5 jobs/s at this size, so a real run of it is not practical here).
    baseline = dry_run(args.jobs, args.seed)
    problems = []
    rows = [
        [label, f"{m.wall_s:.1f}", f"{1000 * m.cpu_s / n:.2f}", f"{m.maxrss_mb:.0f}"]
        for label, n, m in (
            ("matensemble, 100 jobs", 100, small),
            (f"matensemble, {args.jobs} jobs", args.jobs, big),
            (f"Snakemake alone: dry run of the {args.jobs}-job DAG", args.jobs, baseline),
        )
    ]
    print(table(rows, ["run", "wall s", "snakemake-process CPU ms/job", "peak RSS MB"]))
    print(f"non-failing outputs missing: {len(missing)} (must be 0)")
    print(f"failures reported: {reported} of {failing} planted (must be equal)")
    if missing:
        problems.append(f"{len(missing)} non-failing outputs missing")
    if reported != failing:
        problems.append(f"{reported} failures reported of {failing} planted")
    print(
        f"plugin CPU per job (its own work in both threads): "
        f"{1000 * end['plugin_cpu_s'] / args.jobs:.2f} ms (goal <= 2 ms); "
        f"journal {1000 * end['journal_cpu_s'] / args.jobs:.3f} ms/job"
    )
    growth = big.maxrss_mb - small.maxrss_mb
    print(f"peak memory growth from 100 to {args.jobs} jobs: {growth:.0f} MB")
    print(
        f"peak memory beyond Snakemake's own (vs. its dry run of the same DAG): "
        f"{big.maxrss_mb - baseline.maxrss_mb:.0f} MB (goal < 100 MB)"
    )
    print(
        f"Snakemake's own per-job work inside the plugin's calls: "
        f"{1000 * end['snakemake_work_cpu_s'] / args.jobs:.2f} ms/job (not counted above)"
    )
    if problems:
        sys.exit("FAILED: " + "; ".join(problems))


def dry_run(jobs: int, seed: int):
    """Snakemake alone on the same DAG: builds every job, runs none."""
    measurement = run_snakemake(
        f"scale-dry-{jobs}", SNAKEFILE.format(jobs=jobs, seed=seed), ["--dry-run"], 7200
    )
    require_exit(f"the dry run of the {jobs}-job DAG", measurement, 0)
    return measurement


def where_time_goes(jobs: int, measurement, end: dict, dry) -> list[str]:
    """One row: per job, the snakemake process's CPU and its parts (ms)."""
    per_job = 1000 / jobs
    plugin = end["plugin_cpu_s"]
    inside = end["snakemake_work_cpu_s"]
    rest = measurement.cpu_s - dry.cpu_s - plugin - inside
    return [
        f"{jobs:,}",
        f"{measurement.wall_s:.0f}",
        f"{jobs / measurement.wall_s:.0f}",
        f"{measurement.cpu_s * per_job:.2f}",
        f"{dry.cpu_s * per_job:.2f}",
        f"{plugin * per_job:.2f}",
        f"{inside * per_job:.2f}",
        f"{rest * per_job:.2f}",
        f"{measurement.maxrss_mb:.0f}",
        f"{dry.maxrss_mb:.0f}",
    ]


def compare(small: int, big: int, seed: int, extra: tuple[str, ...], base_jobs: int = 100) -> None:
    """``small`` then ``big`` jobs end to end, and a ``base_jobs`` run for memory.
    Any run that exits otherwise than expected stops it (non-zero)."""
    base, *_ = run(base_jobs, seed, extra=extra)
    rows, kb_per_job, plugin_ms = [], [], []
    for jobs in (small, big):
        measurement, missing, reported, failing, end = run(
            jobs, seed, timeout=3 * 3600, extra=extra
        )
        if missing or reported != failing:
            sys.exit(
                f"FAILED at {jobs} jobs: {len(missing)} outputs missing, "
                f"{reported} of {failing} failures reported"
            )
        rows.append(where_time_goes(jobs, measurement, end, dry_run(jobs, seed)))
        kb_per_job.append(1024 * (measurement.maxrss_mb - base.maxrss_mb) / jobs)
        plugin_ms.append(1000 * end["plugin_cpu_s"] / jobs)
    header = [
        "jobs",
        "wall s",
        "jobs/s",
        "snakemake CPU ms/job",
        "DAG (dry run)",
        "plugin",
        "Snakemake's per-job work in plugin calls",
        "Snakemake scheduler and rest",
        "peak RSS MB",
        "dry run's peak RSS MB",
    ]
    print(table(rows, header))
    print(
        f"{small:,} -> {big:,} jobs: plugin CPU per job x{plugin_ms[1] / plugin_ms[0]:.2f}, "
        f"memory per job (above a 100-job run) x{kb_per_job[1] / kb_per_job[0]:.2f} "
        f"({kb_per_job[0]:.1f} -> {kb_per_job[1]:.1f} KB)"
    )


if __name__ == "__main__":
    main()
