"""Jobs per second through child Flux instances vs one instance.

Two modes, each run inside a Flux test instance this script starts
(``flux start --test-size=B``, B real brokers on this machine):

``--mode real`` (default): trivial jobs (``true``, one core) that really run,
(1) submitted to the enclosing instance directly through one ``FluxExecutor``,
(2) for each scheduler in ``--schedulers``: K children started over node groups
of the enclosing instance (:func:`start_children`), one ``FluxExecutor`` per
child through its relay (the carrier over the enclosing ``rexec``), the jobs
dealt round-robin. Everything is real: brokers, job shells, processes, relays.

``--mode fake``: the children are separate one-broker test instances, each with
its own ``--fake-nodes`` fake nodes (``resource.noverify``, Fluxion), started as
jobs of the enclosing instance on one rank each and reached through the same
relay code as started children (a :class:`ChildInstance` with the relay URI).
Jobs run in Flux's test execution mode (no job shell, no process). The baseline
is one such instance with all K x ``--fake-nodes`` fake nodes, directly and
through the relay. Real: brokers, schedulers, relays, the submission path;
fake: the nodes and the jobs' execution.

Prints one table and a JSON line; exits non-zero when any job did not finish
successfully.

    uv run python benchmarks/children.py --jobs 300
    uv run python benchmarks/children.py --mode fake --children 2 --fake-nodes 1000
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

INSIDE = "MATENSEMBLE_CHILDREN_BENCH_INSIDE"
#: a one-broker instance's resources replaced by NODES fake Frontier nodes (56 cores, 8 GPUs)
FAKE_SETUP = """
set -euo pipefail
R=$(mktemp -t fake-R.XXXXXX.json)
flux R encode --ranks=0-$(({nodes} - 1)) --cores=0-55 --gpu=0-7 \\
  --hosts=node[0-$(({nodes} - 1))] > "$R"
for m in sched-fluxion-qmanager sched-fluxion-resource sched-simple; do
  flux module remove "$m" 2>/dev/null || true
done
flux module reload resource noverify monitor-force-up
flux resource reload -f "$R" 2>/dev/null
flux module load sched-fluxion-resource
flux module load sched-fluxion-qmanager
flux getattr local-uri > {out}.tmp && mv {out}.tmp {out}
exec sleep inf
"""


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("real", "fake"), default="real")
    parser.add_argument("--brokers", type=int, default=4, help="real brokers (real mode)")
    parser.add_argument("--children", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--schedulers", default="simple,fluxion", help="real mode: for children")
    parser.add_argument("--fake-nodes", type=int, default=1000, help="fake mode: per child")
    parser.add_argument("--pings", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2, help="fake mode: alternating rounds")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    if os.environ.get(INSIDE):
        results = run_real(args) if args.mode == "real" else run_fake(args)
        print(json.dumps(results))
        ok = all(r["failed"] == 0 and r["done"] == args.jobs for r in results)
        return 0 if ok else 1
    return start_instance(args, argv)


def start_instance(args: argparse.Namespace, argv: list[str] | None) -> int:
    flux = shutil.which("flux") or "/opt/flux/bin/flux"
    if not Path(flux).exists():
        raise SystemExit("needs the flux command (flux-core 0.88 + Fluxion) on PATH or /opt/flux")
    env = dict(os.environ, **{INSIDE: "1"})
    env["PATH"] = os.pathsep.join((str(Path(flux).parent), env.get("PATH", "")))
    out = subprocess.run([flux, "env"], capture_output=True, text=True, env=env).stdout
    for line in out.splitlines():
        if line.startswith("export PYTHONPATH="):
            path = shlex.split(line.split("=", 1)[1])[0]
            env["PYTHONPATH"] = os.pathsep.join(p for p in (path, env.get("PYTHONPATH")) if p)
    size = args.brokers if args.mode == "real" else args.children + 1
    command = [sys.executable, __file__, *(sys.argv[1:] if argv is None else argv)]
    done = subprocess.run(
        [flux, "start", f"--test-size={size}", *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    lines = done.stdout.strip().splitlines()
    if not lines or not lines[-1].startswith("["):
        sys.stderr.write(done.stdout + done.stderr)
        return done.returncode or 1
    print_table(args, json.loads(lines[-1]))
    print(lines[-1])
    return done.returncode


def print_table(args: argparse.Namespace, results: list[dict]) -> None:
    print(f"mode={args.mode} jobs={args.jobs} children={args.children}")
    header = f"{'path':<44} {'done':>6} {'failed':>6} {'jobs/s':>8} {'ping ms':>8} {'start s':>8}"
    print(header)
    for r in results:
        print(
            f"{r['path']:<44} {r['done']:>6} {r['failed']:>6} {r['rate']:>8.1f} "
            f"{r.get('ping_ms', float('nan')):>8.3f} {r.get('start_s', float('nan')):>8.2f}"
        )


# -- inside the instance ------------------------------------------------------------------
def trivial_jobspec(test_exec: bool):
    import flux.job

    jobspec = flux.job.JobspecV1.from_command(["true"], num_tasks=1, cores_per_task=1)
    jobspec.cwd = tempfile.gettempdir()
    jobspec.environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    if test_exec:
        jobspec.setattr("system.exec.test.run_duration", "0.001s")
    return jobspec


def drive(handle_kwargs_list: list[dict], jobs: int, test_exec: bool) -> dict:
    """``jobs`` jobs dealt round-robin over one FluxExecutor per instance."""
    import flux.job

    executors = [flux.job.FluxExecutor(handle_kwargs=kw) for kw in handle_kwargs_list]
    jobspec = trivial_jobspec(test_exec)
    start = time.perf_counter()
    futures = [executors[i % len(executors)].submit(jobspec) for i in range(jobs)]
    done, _ = concurrent.futures.wait(futures, timeout=1800)
    elapsed = time.perf_counter() - start
    failed = sum(1 for f in done if f.exception() is not None or f.result() != 0)
    for executor in executors:
        executor.shutdown(wait=False, cancel_futures=True)
    return {"done": len(done), "failed": failed, "rate": len(done) / elapsed}


def ping_ms(handle, count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        handle.rpc("broker.ping", {}).get()
    return (time.perf_counter() - start) / count * 1e3


def settle(handle) -> None:
    subprocess.run(["flux", "queue", "drain"], check=True)
    subprocess.run(["flux", "job", "purge", "--force", "--num-limit=0"], check=False)


def run_real(args: argparse.Namespace) -> list[dict]:
    import flux

    from snakemake_executor_plugin_matensemble.backends.flux.children import start_children

    parent = flux.Flux()
    results = [{"path": "one instance (direct)", **drive([{}], args.jobs, False)}]
    results[-1]["ping_ms"] = ping_ms(parent, args.pings)
    for scheduler in args.schedulers.split(","):
        settle(parent)
        started = time.perf_counter()
        children = start_children(parent, args.children, scheduler=scheduler)
        start_s = time.perf_counter() - started
        kwargs = [child.handle_kwargs for child in children.children]
        figures = drive(kwargs, args.jobs, False)
        figures["ping_ms"] = ping_ms(children.children[0].open(), args.pings)
        path = f"{args.children} children ({scheduler}) via relay"
        results.append({"path": path, "start_s": start_s, **figures})
        children.close(parent)
    return results


def start_fake_instance(parent, rank: int, nodes: int, workdir: Path) -> tuple[int, str]:
    """A one-broker test instance with ``nodes`` fake nodes, run as a job on
    enclosing ``rank``; its jobid and local URI."""
    import flux.job

    out = workdir / f"uri-{rank}"
    script = FAKE_SETUP.format(nodes=nodes, out=shlex.quote(str(out)))
    jobspec = flux.job.JobspecV1.from_command(
        ["flux", "start", "--test-size=1", "bash", "-c", script], num_tasks=1, cores_per_task=1
    )
    jobspec.cwd = str(workdir)
    jobspec.environment = {k: v for k, v in os.environ.items() if k != "FLUX_URI"}
    jobspec.setattr("system.constraints", {"ranks": [str(rank)]})
    jobid = flux.job.submit(parent, jobspec)
    deadline = time.monotonic() + 120
    while not out.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"the fake instance on rank {rank} did not come up")
        time.sleep(0.1)
    return jobid, out.read_text().strip()


def run_fake(args: argparse.Namespace) -> list[dict]:
    import flux

    from snakemake_executor_plugin_matensemble.backends.flux.children.child import ChildInstance
    from snakemake_executor_plugin_matensemble.backends.flux.children.relay import (
        child_uri,
        install_carrier,
        local_path_of,
        write_carrier_script,
    )

    parent = flux.Flux()
    workdir = Path(tempfile.mkdtemp(prefix="children-bench-"))
    install_carrier(write_carrier_script(workdir, parent.attr_get("local-uri")))

    def attach(name: str, rank: int, nodes: int) -> ChildInstance:
        jobid, local = start_fake_instance(parent, rank, nodes, workdir)
        return ChildInstance(name, jobid, (rank,), child_uri(rank, local_path_of(local)))

    total = args.children * args.fake_nodes
    whole = attach("one", 0, total)
    children = [attach(f"c{i}", i + 1, args.fake_nodes) for i in range(args.children)]
    direct = {"url": "local://" + local_path_of(whole.uri)}
    paths = [
        (f"one instance, {total} fake nodes (direct)", [direct], flux.Flux(direct["url"])),
        (f"one instance, {total} fake nodes (relay)", [whole.handle_kwargs], whole.open()),
        (
            f"{args.children} instances x {args.fake_nodes} fake nodes (relay)",
            [child.handle_kwargs for child in children],
            children[0].open(),
        ),
    ]
    results = []
    for round_ in range(args.repeats):  # alternate: a noisy machine shows in the spread
        rotated = paths[round_ % len(paths) :] + paths[: round_ % len(paths)]  # no order bias
        for label, kwargs, handle in rotated:
            figures = drive(kwargs, args.jobs, True)
            figures["ping_ms"] = ping_ms(handle, args.pings)
            results.append({"path": f"{label} r{round_}", **figures})
    for instance in (whole, *children):
        flux.job.cancel(parent, instance.jobid)
    return results


if __name__ == "__main__":
    sys.exit(main())
