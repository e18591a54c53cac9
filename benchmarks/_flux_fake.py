"""The real-Flux mode of ``full_machine.py``: Flux's scheduler and the plugin together.

Inside a one-broker Flux test instance whose resource set claims NODES nodes
(``resource.noverify``, a fake R, Fluxion), jobs run in Flux's test execution
mode (``attributes.system.exec.test.run_duration``: no job shell, no process).
The same seeded jobs go (1) through the plugin (dispatcher, packer, allocation
and its Flux backend with one FluxExecutor) and (2) raw: the same jobspecs (the
plugin's own, without rank pinning) submitted asynchronously in a loop, as
``flux submit --cc`` does. Each ends when every job is inactive; jobs per
second of wall time are compared; (3) the same jobspecs through one
``FluxExecutor`` without the plugin show how much of any gap is the executor's
way of following each job. With ``repeats`` > 1 the three modes alternate that
many times in the same instance (a noisy machine then shows in the spread of
the per-round ratios, not in one figure).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from snakemake_executor_plugin_matensemble.backends.base import LaunchSpec
from snakemake_executor_plugin_matensemble.dispatcher import Dispatcher
from snakemake_executor_plugin_matensemble.packing.allocation import Allocation
from snakemake_executor_plugin_matensemble.packing.packer import Packer
from snakemake_executor_plugin_matensemble.packing.policies import BackfillPolicy
from snakemake_executor_plugin_matensemble.packing.queue import JobTicket

#: replaces the test instance's resources with NODES x (CORES, GPUS) fake nodes
FAKE_MACHINE = """
set -euo pipefail
R=$(mktemp -t fake-R.XXXXXX.json)
flux R encode --ranks=0-$(({nodes} - 1)) --cores=0-$(({cores} - 1)) --gpu=0-$(({gpus} - 1)) \\
  --hosts=node[0-$(({nodes} - 1))] > "$R"
for m in sched-fluxion-qmanager sched-fluxion-resource sched-simple; do
  flux module remove "$m" 2>/dev/null || true
done
flux module reload resource noverify monitor-force-up
flux resource reload -f "$R" 2>/dev/null
flux module load sched-fluxion-resource
flux module load sched-fluxion-qmanager
"""

#: test-execution seconds per declared runtime second
TIME_SCALE = 1 / 600


def run_in_flux(
    nodes: int, cores: int, gpus: int, jobs: int, seed: int, repeats: int = 1
) -> list[dict]:
    """Start the instance, run the modes inside it ``repeats`` times, return the
    figures of each round."""
    flux = shutil.which("flux")
    if flux is None:
        raise SystemExit("--flux needs the flux command on PATH (flux-core with Fluxion)")
    env = dict(os.environ)
    for line in subprocess.run([flux, "env"], capture_output=True, text=True).stdout.splitlines():
        if line.startswith("export PYTHONPATH="):
            flux_path = shlex.split(line.split("=", 1)[1])[0]
            env["PYTHONPATH"] = os.pathsep.join(p for p in (flux_path, env.get("PYTHONPATH")) if p)
    inside = " ".join(
        shlex.quote(a)
        for a in (sys.executable, __file__, str(nodes), str(jobs), str(seed), str(repeats))
    )
    setup = FAKE_MACHINE.format(nodes=nodes, cores=cores, gpus=gpus)
    out = subprocess.run(
        [flux, "start", "--test-size=1", "bash", "-c", f"{setup}\n{inside}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800 * repeats,
    )
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        raise SystemExit(f"the Flux run failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return json.loads(lines[-1])


class _Listener:
    def __init__(self, jobs: int):
        self.jobs, self.finished, self.failed = jobs, 0, 0
        self.done = threading.Event()

    def on_started(self, ticket, backend_id, time) -> None:
        pass

    def on_finished(self, ticket, result) -> None:
        self.finished += 1
        self.failed += not result.ok
        if self.finished == self.jobs:
            self.done.set()

    def on_withdrawn(self, tickets, reason) -> None:
        self.finished += len(tickets)
        self.failed += len(tickets)
        if self.finished >= self.jobs:
            self.done.set()

    def on_crash(self, error, tickets) -> None:
        self.done.set()

    def on_tick(self) -> None:
        pass


def _settle() -> None:
    """Every job inactive, and purged: each mode starts from an empty job list
    (Flux slows down as inactive jobs pile up)."""
    subprocess.run(["flux", "queue", "drain"], check=True)
    subprocess.run(["flux", "job", "purge", "--force", "--num-limit=0", "--batch=100"], check=True)


def _inside(nodes: int, jobs: int, seed: int, repeats: int) -> list[dict]:
    return [_one_round(nodes, jobs, seed) for _ in range(repeats)]


def _one_round(nodes: int, jobs: int, seed: int) -> dict:
    import flux
    import flux.job
    from full_machine import workload

    from snakemake_executor_plugin_matensemble.backends.flux.backend import FluxBackend
    from snakemake_executor_plugin_matensemble.backends.flux.jobspec import build_jobspec
    from snakemake_executor_plugin_matensemble.backends.flux.options import FluxOptions
    from snakemake_executor_plugin_matensemble.packing.deadline import RuntimeEstimator
    from snakemake_executor_plugin_matensemble.packing.ordering import make_order
    from snakemake_executor_plugin_matensemble.settings import ExecutorSettings

    mix = workload(jobs, seed)
    durations = {key: max(0.01, runtime * TIME_SCALE) for key, (_, runtime, _) in enumerate(mix)}
    logs = Path(os.environ.get("TMPDIR", "/tmp")) / f"matensemble-flux-bench-{os.getpid()}"

    def spec_for(ticket: JobTicket) -> LaunchSpec:
        return LaunchSpec(
            ticket.key, "true", f"sim{ticket.key}", "/", {}, str(logs / "log"), ticket.request
        )

    class TestExecution(FluxBackend):
        def jobspec(self, spec, placement, depends_on=None):
            jobspec = super().jobspec(spec, placement, depends_on)
            jobspec.setattr("system.exec.test.run_duration", f"{durations[spec.key]:.3f}s")
            return jobspec

    # (1) the plugin
    backend = TestExecution(FluxOptions(), run_id="bench")
    allocation = Allocation(backend.discover())
    order = make_order(ExecutorSettings.order, RuntimeEstimator())
    packer = Packer(allocation, BackfillPolicy(60.0), order=order)
    listener = _Listener(jobs)
    dispatcher = Dispatcher(packer, backend, listener, spec_for, idle_timeout=1.0)
    tickets = [JobTicket(key, request) for key, (request, _, _) in enumerate(mix)]
    began = time.perf_counter()
    dispatcher.submit(tickets)
    dispatcher.start()
    listener.done.wait()
    plugin_wall = time.perf_counter() - began
    plugin_cpu = dispatcher.cpu_s
    dispatcher.stop(timeout=30)
    _settle()

    # (2) raw: the same jobspecs (no rank pinning), submitted in a loop
    handle = flux.Flux()
    unpinned = FluxOptions(pin_ranks=False)
    idle = Allocation(allocation.specs)
    jobspecs = []
    for ticket in tickets:
        spec = spec_for(ticket)
        jobspec = build_jobspec(
            flux.job.JobspecV1, spec, idle.place(ticket.request), unpinned, "raw"
        )
        jobspec.setattr("system.exec.test.run_duration", f"{durations[ticket.key]:.3f}s")
        jobspecs.append(jobspec)
    began = time.perf_counter()
    futures = [flux.job.submit_async(handle, jobspec) for jobspec in jobspecs]
    for future in futures:
        future.get_id()
    subprocess.run(["flux", "queue", "drain"], check=True)
    raw_wall = time.perf_counter() - began
    _settle()

    # (3) the same jobspecs through one FluxExecutor (the plugin's way of
    # following jobs, without the plugin): where the gap to raw comes from
    began = time.perf_counter()
    with flux.job.FluxExecutor() as executor:
        done = [executor.submit(jobspec) for jobspec in jobspecs]
        concurrent.futures.wait(done)
    executor_wall = time.perf_counter() - began
    return {
        "nodes": nodes,
        "jobs": jobs,
        "plugin_wall_s": plugin_wall,
        "plugin_cpu_s": plugin_cpu,
        "plugin_failed": listener.failed,
        "raw_wall_s": raw_wall,
        "executor_wall_s": executor_wall,
    }
    _settle()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    print(json.dumps(_inside(*(int(a) for a in sys.argv[1:5]))))
