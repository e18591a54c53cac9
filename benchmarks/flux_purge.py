"""Flux throughput over a long run, with and without purging inactive jobs.

Runs N short jobs (``true``, 1 core each) through the plugin's own Flux path
(packer + dispatcher + ``FluxBackend``, look-ahead on), once with purging
(``--matensemble-flux-keep-inactive``, default 1000 kept) and once without, each
in a fresh ``flux start --test-size=1`` instance, and prints for each: the
overall rate, the rate of the first and last 1000 jobs, and Flux's inactive-job
count as the run goes (from ``job-list`` statistics).

    PATH=/opt/flux/bin:$PATH uv run python benchmarks/flux_purge.py --jobs 5000

Times are wall-clock seconds (``time.monotonic``); rates are jobs per second.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def outer(args: argparse.Namespace) -> int:
    flux = shutil.which("flux")
    if flux is None:
        print("no Flux: the 'flux' command is not on PATH", file=sys.stderr)
        return 2
    env = dict(os.environ)
    out = subprocess.run([flux, "env"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("export PYTHONPATH="):
            path = line.split("=", 1)[1].strip('"').split(":")[0]
            env["PYTHONPATH"] = os.pathsep.join(p for p in (path, env.get("PYTHONPATH")) if p)
    results = []
    for keep in (-1, args.keep):
        command = [
            flux,
            "start",
            "--test-size=1",
            sys.executable,
            __file__,
            "--inner",
            "--jobs",
            str(args.jobs),
            "--keep",
            str(keep),
        ]
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            print(done.stdout + done.stderr, file=sys.stderr)
            return 1
        results.append(json.loads(lines[-1]))
    print(f"{args.jobs} jobs of `true`, 1 core each, one Flux instance (test-size=1)")
    print(
        f"{'mode':<22} {'total s':>8} {'jobs/s':>7} {'first 1k':>9} {'last 1k':>8} "
        f"{'max inactive':>13} {'inactive at end':>16} {'purged':>7}"
    )
    for r in results:
        mode = "no purge" if r["keep"] < 0 else f"purge (keep {r['keep']})"
        print(
            f"{mode:<22} {r['total_s']:>8.1f} {r['rate']:>7.1f} {r['rate_first']:>9.1f} "
            f"{r['rate_last']:>8.1f} {r['max_inactive']:>13} {r['inactive_end']:>16} "
            f"{r['purged']:>7}"
        )
    print("samples (finished jobs: inactive jobs in Flux):")
    for r in results:
        mode = "no purge" if r["keep"] < 0 else "purge"
        print(f"  {mode}: " + ", ".join(f"{n}:{i}" for n, i in r["samples"]))
    return 0


def inner(args: argparse.Namespace) -> int:
    import flux
    import flux.job.stats

    from snakemake_executor_plugin_matensemble.backends.base import LaunchSpec
    from snakemake_executor_plugin_matensemble.backends.flux import FluxBackend, FluxOptions
    from snakemake_executor_plugin_matensemble.dispatcher import Dispatcher
    from snakemake_executor_plugin_matensemble.packing.allocation import Allocation
    from snakemake_executor_plugin_matensemble.packing.packer import Packer
    from snakemake_executor_plugin_matensemble.packing.policies import BackfillPolicy
    from snakemake_executor_plugin_matensemble.packing.queue import JobTicket
    from snakemake_executor_plugin_matensemble.packing.resource_request import ResourceRequest

    keep = None if args.keep < 0 else args.keep
    backend = FluxBackend(FluxOptions(reserve_cores=0, keep_inactive=keep), run_id="bench")
    allocation = Allocation(backend.discover())
    packer = Packer(allocation, BackfillPolicy())
    handle = flux.Flux()
    stats = flux.job.stats.JobStats(handle)
    workdir = tempfile.mkdtemp(prefix="flux-purge-")
    finished: list[float] = []
    failures: list[str] = []
    samples: list[tuple[int, int]] = []
    all_done = threading.Event()

    class Listener:
        def on_started(self, ticket, backend_id, time_):
            pass

        def on_finished(self, ticket, result):
            finished.append(time.monotonic())
            if not result.ok:
                failures.append(result.reason)
            if len(finished) == args.jobs:
                all_done.set()

        def on_withdrawn(self, tickets, reason):
            failures.append(f"{len(tickets)} withdrawn: {reason}")

        def on_crash(self, error, tickets):
            failures.append(f"crash: {error}")
            all_done.set()

        def on_tick(self):
            pass

    request = ResourceRequest()

    def spec(ticket):
        return LaunchSpec(
            ticket.key, "true", "bench", workdir, {"PATH": os.environ["PATH"]}, "/dev/null", request
        )

    dispatcher = Dispatcher(packer, backend, Listener(), spec)
    dispatcher.start()
    started = time.monotonic()
    dispatcher.submit([JobTicket(key, request) for key in range(1, args.jobs + 1)])
    next_sample = 0
    while not all_done.wait(0.5):
        if len(finished) >= next_sample:
            stats.update_sync()
            samples.append((len(finished), stats.inactive))
            next_sample += max(1, args.jobs // 10)
    total = time.monotonic() - started
    stats.update_sync()
    samples.append((len(finished), stats.inactive))
    dispatcher.stop(timeout=60)
    first = min(1000, args.jobs)
    print(
        json.dumps(
            {
                "keep": args.keep,
                "jobs": len(finished),
                "failures": failures[:5],
                "total_s": total,
                "rate": len(finished) / total,
                "rate_first": first / (finished[first - 1] - started),
                "rate_last": first / (finished[-1] - finished[-first - 1])
                if args.jobs > first
                else first / total,
                "max_inactive": max(i for _, i in samples),
                "inactive_end": samples[-1][1],
                "purged": backend.purged,
                "samples": samples,
            }
        )
    )
    return 0 if not failures else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--keep", type=int, default=1000, help="inactive jobs kept when purging")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    return inner(args) if args.inner else outer(args)


if __name__ == "__main__":
    sys.exit(main())
