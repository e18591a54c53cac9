"""Throughput of trivial jobs: Snakemake's local executor vs. matensemble's paths.

    uv run python benchmarks/throughput.py            # N=300
    uv run python benchmarks/throughput.py --jobs 100 --skip-per-job

Prints wall time, jobs/s and the CPU time of the snakemake process itself
(children excluded) per job for:

* Snakemake's own local executor with --cores = usable CPUs,
* matensemble, direct shell path (local backend, same cores),
* matensemble, per-job Snakemake path (local backend, same cores),
* with Flux reachable: matensemble on the Flux backend, and raw
  ``flux submit --cc=1-N --wait true`` in the same instance,

then a table per rule kind (N trivial jobs each: ``shell:``, ``script:``
(Python), groups of 10 chained ``shell:`` rules, ``run:``), Snakemake's local
executor vs matensemble (local backend). ``--kinds-only`` prints just that table.

All figures come from one run; compare them as ratios.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time

from _harness import Measurement, run_snakemake, table

SNAKEFILE = """
rule all:
    input: expand("out/{{i}}.txt", i=range({n}))

rule echo:
    output: "out/{{i}}.txt"
    shell: "echo {{wildcards.i}} > {{output}}"
"""


#: Snakefiles of the rule-kind table; ``{n}`` is the number of jobs.
KIND_SNAKEFILES = {
    "shell": SNAKEFILE,
    "script": """
rule all:
    input: expand("out/{{i}}.txt", i=range({n}))

rule echo:
    output: "out/{{i}}.txt"
    script: "echo.py"
""",
    "group of 10 shell": """
rule all:
    input: expand("out/{{g}}.9.txt", g=range({n} // 10))

rule first:
    output: "out/{{g}}.0.txt"
    group: "chain"
    shell: "echo {{wildcards.g}} > {{output}}"

rule next:
    input: lambda wc: f"out/{{wc.g}}.{{int(wc.k) - 1}}.txt"
    output: "out/{{g}}.{{k}}.txt"
    wildcard_constraints: k="[1-9]"
    group: "chain"
    shell: "cat {{input}} > {{output}}"
""",
    "group of 10 shell, one level": """
rule all:
    input: expand("out/{{g}}/{{k}}.txt", g=range({n} // 10), k=range(10))

rule member:
    output: "out/{{g}}/{{k}}.txt"
    group: "fan"
    shell: "echo {{wildcards.g}} {{wildcards.k}} > {{output}}"
""",
    "group of 1 shell": """
rule all:
    input: expand("out/{{i}}.txt", i=range({n}))

rule member:
    output: "out/{{i}}.txt"
    group: "alone"
    shell: "echo {{wildcards.i}} > {{output}}"
""",
    "run": """
rule all:
    input: expand("out/{{i}}.txt", i=range({n}))

rule echo:
    output: "out/{{i}}.txt"
    run:
        with open(output[0], "w") as stream:
            stream.write(wildcards.i + "\\n")
""",
}
#: Arguments for both executors, per kind: independent jobs of one group
#: name are one group job each unless --group-components bundles them
#: (Snakemake's local executor forms no group jobs and ignores it).
KIND_ARGS = {"group of 10 shell, one level": ["--group-components", "fan=10"]}
#: Files next to the Snakefile, per kind.
KIND_FILES = {
    "script": {"echo.py": "open(snakemake.output[0], 'w').write(snakemake.wildcards.i + '\\n')\n"}
}
#: Goal for matensemble / local executor, per kind (issue: shell, script, group
#: within 1.25x; run: within 2x). "group of 10 shell" is a chain of 10 (ten
#: toposort levels: Snakemake itself sleeps 0.1 s per level when it
#: post-processes a group job); "one level" is 10 independent members.
KIND_GOALS = {
    "shell": 1.25,
    "script": 1.25,
    "group of 10 shell": 1.25,
    "group of 10 shell, one level": 1.25,
    "group of 1 shell": 1.25,
    "run": 2.0,
}


def rule_kinds(n: int, cores: int, only: list[str] | None = None) -> bool:
    """The rule-kind table: local executor vs matensemble, N jobs each; True
    when every run succeeded (a goal is met only by runs that succeeded)."""
    rows, all_ok = [], True
    for kind, template in KIND_SNAKEFILES.items():
        if only and kind not in only:
            continue
        snakefile = template.format(n=n)
        files = KIND_FILES.get(kind, {})
        extra = KIND_ARGS.get(kind, [])
        local = run_snakemake(
            f"local {kind}", snakefile, ["--cores", str(cores), *extra], files=files
        )
        plugin = run_snakemake(
            f"matensemble {kind}",
            snakefile,
            [
                "-j",
                "unlimited",
                "--executor",
                "matensemble",
                "--matensemble-backend",
                "local",
                *extra,
            ],
            files=files,
        )
        ratio = plugin.wall_s / local.wall_s
        ok = local.returncode == plugin.returncode == 0
        all_ok = all_ok and ok
        if not ok:
            verdict = "n/a (a run failed)"
        else:
            verdict = "met" if ratio <= KIND_GOALS[kind] else "NOT met"
        rows.append(
            [
                kind,
                f"{local.wall_s:.1f}",
                f"{plugin.wall_s:.1f}",
                f"{ratio:.2f}x",
                f"<= {KIND_GOALS[kind]:.2f}x",
                verdict,
                f"{local.per_job_ms(n):.1f} / {plugin.per_job_ms(n):.1f}",
                "ok" if ok else f"FAILED ({local.returncode} / {plugin.returncode})",
            ]
        )
    print(f"{n} trivial jobs per rule kind on {cores} cores")
    print(
        table(
            rows,
            [
                "rule kind",
                "local executor s",
                "matensemble s",
                "ratio",
                "goal",
                "",
                "snakemake-process CPU ms/job (local / matensemble)",
                "status",
            ],
        )
    )
    return all_ok


def flux_reachable() -> bool:
    return bool(os.environ.get("FLUX_URI")) and shutil.which("flux") is not None


def flux_span(since: float) -> float:
    """First submit to last job end of the Flux jobs submitted after ``since``."""
    import flux
    import flux.job

    jobs = [
        job
        for job in flux.job.JobList(flux.Flux(), max_entries=0, since=since).jobs()
        if job.t_submit >= since
    ]
    return max(job.t_inactive for job in jobs) - min(job.t_submit for job in jobs)


def raw_flux(n: int) -> Measurement:
    started = time.perf_counter()
    subprocess.run(["flux", "submit", f"--cc=1-{n}", "--wait", "--quiet", "true"], check=True)
    return Measurement(
        "raw flux submit --cc --wait", time.perf_counter() - started, float("nan"), float("nan"), 0
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument(
        "--skip-per-job", action="store_true", help="skip the slow per-job Snakemake path"
    )
    parser.add_argument("--kinds-only", action="store_true", help="only the table per rule kind")
    parser.add_argument(
        "--kind", action="append", choices=list(KIND_SNAKEFILES), help="only these rule kinds"
    )
    args = parser.parse_args()
    n = args.jobs
    cores = len(os.sched_getaffinity(0))
    if args.kinds_only:
        if not rule_kinds(n, cores, args.kind):
            sys.exit("a run failed: see the status column")
        return
    snakefile = SNAKEFILE.format(n=n)
    common = ["-j", "unlimited", "--executor", "matensemble"]
    runs = [
        run_snakemake("snakemake local executor", snakefile, ["--cores", str(cores)]),
        run_snakemake(
            "matensemble direct (local backend)",
            snakefile,
            [*common, "--matensemble-backend", "local"],
        ),
    ]
    if not args.skip_per_job:
        runs.append(
            run_snakemake(
                "matensemble per-job snakemake (local)",
                snakefile,
                [*common, "--matensemble-backend", "local", "--matensemble-per-job-snakemake"],
            )
        )
    spans = {}
    if flux_reachable():
        since = time.time()
        runs.append(
            run_snakemake(
                "matensemble direct (flux backend)",
                snakefile,
                # the same cores raw flux submit gets: none kept back for snakemake
                [*common, "--matensemble-backend", "flux", "--matensemble-flux-reserve-cores", "0"],
            )
        )
        spans["plugin"] = flux_span(since)
        since = time.time()
        runs.append(raw_flux(n))
        spans["raw"] = flux_span(since)
    baseline = runs[0].wall_s
    rows = [
        [
            r.label,
            f"{r.wall_s:.1f}",
            f"{n / r.wall_s:.1f}",
            f"{r.wall_s / baseline:.2f}x",
            f"{r.per_job_ms(n):.2f}",
            f"{r.maxrss_mb:.0f}",
            "ok" if r.returncode == 0 else f"FAILED ({r.returncode})",
        ]
        for r in runs
    ]
    print(f"{n} trivial echo jobs on {cores} cores")
    print(
        table(
            rows,
            [
                "run",
                "wall s",
                "jobs/s",
                "vs local executor",
                "snakemake-process CPU ms/job",
                "peak RSS MB",
                "status",
            ],
        )
    )
    failed = [f"{r.label} ({r.returncode})" for r in runs if r.returncode != 0]
    if failed:
        print(f"FAILED runs, so the ratios below measure nothing: {', '.join(failed)}")
    by_label = {r.label: r for r in runs}
    direct = by_label["matensemble direct (local backend)"]
    per_job = by_label.get("matensemble per-job snakemake (local)")
    print(f"direct path / local executor: {direct.wall_s / baseline:.2f}x (goal <= 1.25x)")
    if direct.journal_cpu_s is not None:
        print(
            f"journal writing: {1000 * direct.journal_cpu_s:.1f} ms CPU = "
            f"{100 * direct.journal_cpu_s / direct.cpu_s:.1f}% of the snakemake process's CPU "
            "(goal < 5%)"
        )
    if per_job:
        print(f"per-job path / direct path: {per_job.wall_s / direct.wall_s:.1f}x (goal >= 25x)")
    flux = by_label.get("matensemble direct (flux backend)")
    raw = by_label.get("raw flux submit --cc --wait")
    if flux and raw:
        print(f"flux backend rate / raw flux rate: {raw.wall_s / flux.wall_s:.2f} (goal >= 0.8)")
        print(
            f"same, counting only the Flux jobs' span (first submit to last end, without "
            f"Snakemake's start-up): plugin {spans['plugin']:.1f} s, raw {spans['raw']:.1f} s, "
            f"ratio {spans['raw'] / spans['plugin']:.2f}"
        )
    print()
    kinds_ok = rule_kinds(n, cores)
    if failed or not kinds_ok:
        sys.exit("a run failed: see the status columns")


if __name__ == "__main__":
    main()
