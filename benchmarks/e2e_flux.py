"""End to end through Snakemake in real Flux brokers: the plugin vs raw ``flux submit --cc``.

    PATH=/opt/flux/bin:$PATH uv run python benchmarks/e2e_flux.py
    PATH=/opt/flux/bin:$PATH uv run python benchmarks/e2e_flux.py --jobs 200 --children 2

Inside one Flux test instance of ``--brokers`` real brokers on this machine
(``flux start --test-size=B``) whose ranks claim Frontier's nodes (56 cores and
8 GPUs each, ``resource.noverify`` and a declared R: the instance is the same
on any machine), the same N trivial jobs (``echo i > out/i.txt``, one core
each; default 2,000) run

1. raw: ``flux submit --cc=1-N --wait`` of the same shell command, in a fresh
   directory of its own;
2. through real ``snakemake --executor matensemble -j unlimited`` on a
   Snakefile of N such jobs, one process per run, children off;
3. the same with ``--matensemble-flux-children K`` for each K of
   ``--children`` (default 2 and 4), when the plugin has that setting.

Everything is real: brokers, scheduler, job shells, the jobs' processes, the
child instances and their relays, Snakemake. Jobs/s are N over the wall time of
the whole command (Snakemake's start-up included), and the ratio to raw of the
same round. Snakemake's start-up is the time from the command's start to the
first job handed to the plugin (the journal's first ``queued`` line); its
share of the wall time is printed. With ``--rounds R`` the paths alternate R
times in the same instance.

Every run must exit 0 and leave all N outputs (raw: every job completed):
otherwise the benchmark prints no rate and exits non-zero, naming the run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _flux_fake import with_flux_bindings

INSIDE = "MATENSEMBLE_E2E_FLUX_INSIDE"
#: test hook: in the Snakefile (not the raw command), job I exits 1 after
#: writing its output, so that a test sees a failed run fail the benchmark
FAIL_JOB = "MATENSEMBLE_E2E_FAIL_JOB"

SNAKEFILE = """\
rule all:
    input: expand("out/{{i}}.txt", i=range(1, {jobs} + 1))

rule echo:
    output: "out/{{i}}.txt"
    shell: "echo {{wildcards.i}} > {{output}}{fail}"
"""


class Failed(RuntimeError):
    """A run did not finish every job or left an output missing."""


@dataclasses.dataclass
class Result:
    path: str
    round: int
    wall_s: float
    #: Snakemake's start-up: command start to the first job handed to the plugin
    startup_s: float | None = None
    #: the first job handed to the plugin to the last job's end
    jobs_s: float | None = None
    #: the last job's end to the command's exit
    teardown_s: float | None = None
    #: CPU seconds of the snakemake process itself (its children excluded)
    cpu_s: float | None = None
    #: jobs started per Flux instance, from the journal (where it names them)
    per_instance: dict[str, int] = dataclasses.field(default_factory=dict)
    #: Flux jobs of the run kept in the enclosing instance (with children: the
    #: children's own jobs and jobs over two children; the plugin purges
    #: inactive jobs past --matensemble-flux-keep-inactive)
    enclosing_jobs: int = 0

    def rate(self, jobs: int) -> float:
        return jobs / self.wall_s


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--brokers", type=int, default=8, help="real brokers (nodes)")
    parser.add_argument(
        "--children", default="2,4", help="comma-separated child counts to run ('' for none)"
    )
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--run-timeout",
        type=float,
        default=1200,
        help="seconds one run may take before the benchmark fails (a hung job shell)",
    )
    parser.add_argument("--cores", type=int, default=56, help="cores each node claims")
    parser.add_argument("--gpus", type=int, default=8, help="GPUs each node claims")
    args = parser.parse_args(argv)
    args.child_counts = [int(k) for k in args.children.split(",") if k.strip()]
    if args.jobs < 1 or args.brokers < 1 or any(k < 1 for k in args.child_counts):
        parser.error("--jobs, --brokers and every --children count must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    if os.environ.get(INSIDE):
        return inside(args)
    return start_instance(args, sys.argv[1:] if argv is None else argv)


# -- outside: the instance ------------------------------------------------------------------
def flux_environment() -> tuple[str, dict[str, str]]:
    flux = shutil.which("flux") or "/opt/flux/bin/flux"
    if not Path(flux).exists():
        raise SystemExit("needs the flux command (flux-core 0.88 + Fluxion) on PATH or /opt/flux")
    env = dict(os.environ, **{INSIDE: "1"})
    env["PATH"] = os.pathsep.join((str(Path(flux).parent), env.get("PATH", "")))
    return flux, with_flux_bindings(flux, env)


def start_instance(args: argparse.Namespace, argv: list[str]) -> int:
    """Run this script inside a test instance whose ranks claim the declared nodes."""
    flux, env = flux_environment()
    hosts = f"node[0-{args.brokers - 1}]" if args.brokers > 1 else "node0"
    encoded = subprocess.run(
        [flux, "R", "encode", f"--hosts={hosts}", f"--cores=0-{args.cores - 1}"]
        + ([f"--gpu=0-{args.gpus - 1}"] if args.gpus else []),
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout
    workdir = Path(tempfile.mkdtemp(prefix="matensemble-e2e-flux-"))
    (workdir / "R.json").write_text(encoded)
    command = [
        flux,
        "start",
        f"--test-size={args.brokers}",
        f"--test-hosts={hosts}",
        "--conf=resource.noverify=true",
        f'--conf=resource.path="{workdir / "R.json"}"',
        sys.executable,
        str(Path(__file__).resolve()),
        *argv,
    ]
    done = subprocess.run(command, env=env, cwd=workdir, timeout=7200)
    if done.returncode == 0:
        shutil.rmtree(workdir, ignore_errors=True)
    return done.returncode


# -- inside the instance --------------------------------------------------------------------
def inside(args: argparse.Namespace) -> int:
    paths = ["raw", "children off", *(f"children {k}" for k in args.child_counts)]
    if args.child_counts and not has_children_setting():
        raise SystemExit(
            "--children: this plugin has no --matensemble-flux-children setting; "
            "run with --children '' or on a version that has it"
        )
    results: list[Result] = []
    try:
        for number in range(1, args.rounds + 1):
            for path in paths:
                results.append(run_path(path, number, args, args.child_counts != []))
                print(f"  {describe(results[-1], args.jobs)}", flush=True)
    except Failed as error:
        print(f"not every job finished: {error}", file=sys.stderr)
        return 1
    print(report(args, results))
    print(json.dumps([dataclasses.asdict(r) for r in results]))
    return 0


def has_children_setting() -> bool:
    from snakemake_executor_plugin_matensemble.settings import ExecutorSettings

    return any(f.name == "flux_children" for f in dataclasses.fields(ExecutorSettings))


def run_path(path: str, number: int, args: argparse.Namespace, children_exist: bool) -> Result:
    jobs, timeout = args.jobs, args.run_timeout
    workdir = Path(tempfile.mkdtemp(prefix=f"e2e-{path.replace(' ', '-')}-"))
    (workdir / "out").mkdir()
    since = time.time()
    if path == "raw":
        result = Result(path, number, raw_submit(workdir, jobs, timeout))
    else:
        children = path.split()[-1] if children_exist else None
        wall, started, cpu = snakemake_run(workdir, jobs, children, path, timeout)
        result = journal_phases(Result(path, number, wall, cpu_s=cpu), workdir, started)
    check_outputs(workdir, jobs, path)
    result.enclosing_jobs = jobs_since(since)
    settle()
    shutil.rmtree(workdir, ignore_errors=True)
    return result


def raw_submit(workdir: Path, jobs: int, timeout: float) -> float:
    """``flux submit --cc=1-N --wait`` of the rule's command; wall seconds.
    ``--wait`` exits non-zero when any job did not exit 0."""
    command = [
        "flux",
        "submit",
        f"--cc=1-{jobs}",
        "--wait",
        "--quiet",
        "--cwd",
        str(workdir),
        "bash",
        "-c",
        "echo {cc} > out/{cc}.txt",
    ]
    began = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise Failed(f"raw flux submit: not done within {timeout:g} s ({stuck()})") from None
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise Failed(f"raw flux submit exited {done.returncode}: {done.stderr[-2000:]}")
    return wall


#: runs snakemake in-process and writes its own CPU seconds (children excluded)
MEASURED_SNAKEMAKE = """
import atexit, json, os, resource, sys
def _report():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    with open("rusage.json", "w") as out:
        json.dump({"cpu_s": usage.ru_utime + usage.ru_stime}, out)
atexit.register(_report)
from snakemake.cli import main
sys.argv = ["snakemake", *sys.argv[1:]]
main()
"""


def snakemake_run(
    workdir: Path, jobs: int, children: str | None, path: str, timeout: float
) -> tuple[float, float, float]:
    """Real ``snakemake --executor matensemble`` on N jobs: wall seconds, the
    epoch second it started, and the snakemake process's own CPU seconds."""
    fail = os.environ.get(FAIL_JOB)
    fail = f"; [ {{wildcards.i}} != {int(fail)} ]" if fail else ""
    (workdir / "Snakefile").write_text(SNAKEFILE.format(jobs=jobs, fail=fail))
    command = [sys.executable, "-c", MEASURED_SNAKEMAKE, "--executor", "matensemble"]
    command += ["-j", "unlimited"]
    if children is not None:
        command += ["--matensemble-flux-children", children]
    started = time.time()
    began = time.perf_counter()
    with open(workdir / "snakemake.log", "w") as log:
        try:
            done = subprocess.run(
                command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise Failed(f"{path}: not done within {timeout:g} s ({stuck()})") from None
    wall = time.perf_counter() - began
    if done.returncode != 0:
        tail = (workdir / "snakemake.log").read_text()[-3000:]
        raise Failed(f"{path}: snakemake exited {done.returncode}:\n{tail}")
    cpu = json.loads((workdir / "rusage.json").read_text())["cpu_s"]
    return wall, started, cpu


def check_outputs(workdir: Path, jobs: int, path: str) -> None:
    missing = [i for i in range(1, jobs + 1) if not (workdir / "out" / f"{i}.txt").is_file()]
    if missing:
        raise Failed(f"{path}: {len(missing)} of {jobs} outputs missing (first: out/{missing[0]})")


def journal_phases(result: Result, workdir: Path, started: float) -> Result:
    """Start-up, jobs and teardown of a snakemake run, and the jobs started
    per Flux instance, from the plugin's journal."""
    first = last = None
    for journal in workdir.glob(".snakemake/matensemble/*/journal.jsonl"):
        with open(journal) as lines:
            for line in lines:
                event = json.loads(line)
                kind = event.get("event")
                if kind == "queued" and first is None:
                    first = float(event["t"])
                elif kind == "started":
                    name = event.get("instance") or "enclosing"
                    result.per_instance[name] = result.per_instance.get(name, 0) + 1
                elif kind != "end" and "end" in event:
                    last = max(last or 0.0, float(event["end"]))
    if first is None or last is None:
        raise Failed(f"{result.path}: the plugin's journal in {workdir} has no jobs")
    result.startup_s = first - started
    result.jobs_s = last - first
    result.teardown_s = started + result.wall_s - last
    return result


def stuck() -> str:
    """What the enclosing instance still runs (a job shell can hang when its
    broker RPC times out on an overloaded machine)."""
    listing = subprocess.run(
        ["flux", "jobs", "-n", "-f", "pending,running", "-o", "{id} {state} {runtime}"],
        capture_output=True,
        text=True,
    )
    lines = listing.stdout.splitlines()
    return f"{len(lines)} Flux job(s) not done: " + "; ".join(lines[:5])


def jobs_since(since: float) -> int:
    """Flux jobs submitted to the enclosing instance since ``since`` (and kept)."""
    import flux
    import flux.job

    listing = flux.job.JobList(flux.Flux(), max_entries=0, since=since - 1).jobs()
    return sum(1 for job in listing if job.t_submit >= since)


def settle() -> None:
    """Every job inactive and purged: each run starts from an empty job list."""
    subprocess.run(["flux", "queue", "drain"], check=True)
    subprocess.run(
        ["flux", "job", "purge", "--force", "--num-limit=0"], check=False, capture_output=True
    )


def describe(result: Result, jobs: int) -> str:
    text = f"round {result.round} {result.path}: {result.wall_s:.1f} s, "
    text += f"{result.rate(jobs):.1f} jobs/s"
    if result.startup_s is not None:
        text += (
            f" (start-up {result.startup_s:.1f} s, jobs {result.jobs_s:.1f} s, teardown "
            f"{result.teardown_s:.1f} s, snakemake CPU {result.cpu_s:.1f} s, "
            f"per instance {result.per_instance}, {result.enclosing_jobs} Flux jobs kept in "
            "the enclosing instance)"
        )
    return text


def report(args: argparse.Namespace, results: list[Result]) -> str:
    load = os.getloadavg()
    lines = [
        f"{args.jobs:,} trivial jobs, {args.brokers} real brokers claiming "
        f"{args.cores} cores + {args.gpus} GPUs each, {args.rounds} round(s); "
        f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}",
        "| round | path | wall s | jobs/s | / raw | Snakemake start-up s (share) "
        "| jobs s | teardown s | snakemake CPU ms/job | jobs per instance (journal) "
        "| Flux jobs kept in the enclosing instance |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ratios: dict[str, list[float]] = {}
    for result in results:
        raw = next(r for r in results if r.round == result.round and r.path == "raw")
        ratio = raw.wall_s / result.wall_s
        ratios.setdefault(result.path, []).append(ratio)
        cells = ["-"] * 5
        if result.startup_s is not None:
            cells = [
                f"{result.startup_s:.1f} ({100 * result.startup_s / result.wall_s:.0f}%)",
                f"{result.jobs_s:.1f}",
                f"{result.teardown_s:.1f}",
                f"{1000 * result.cpu_s / args.jobs:.1f}",
                " / ".join(f"{k} {v}" for k, v in sorted(result.per_instance.items())),
            ]
        lines.append(
            f"| {result.round} | {result.path} | {result.wall_s:.1f} "
            f"| {result.rate(args.jobs):.1f} | {ratio:.2f}x | "
            + " | ".join(cells)
            + f" | {result.enclosing_jobs} |"
        )
    medians = ", ".join(
        f"{path} {statistics.median(values):.2f}x"
        for path, values in ratios.items()
        if path != "raw"
    )
    lines.append(f"median / raw: {medians}; every job of every run finished, every output exists")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
