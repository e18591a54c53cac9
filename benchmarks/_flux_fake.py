"""The real-Flux mode of ``full_machine.py``: Flux's scheduler and the plugin together.

Inside a one-broker Flux test instance whose resource set claims NODES nodes
(``resource.noverify``, a fake R, Fluxion or sched-simple), jobs run in Flux's
test execution mode (``attributes.system.exec.test.run_duration``: no job
shell, no process). The rounds start once the scheduler is online (Fluxion
takes tens of seconds to load 9,408 nodes; that is not the plugin's time).
The same seeded jobs go

1. through the plugin (dispatcher, packer, allocation and its Flux backend
   with one FluxExecutor), as a user gets it: each job's R given in its
   jobspec (alloc-bypass), since the benchmark owns the instance;
2. through the plugin with alloc-bypass off: the scheduler matches every job,
   pinned to the ranks the packer chose;
3. raw: the same jobspecs (the plugin's own, without rank pinning or R)
   submitted asynchronously in a loop, as ``flux submit --cc`` does, and the
   end awaited with ``flux queue drain``;
4. the same jobspecs through one ``FluxExecutor`` without the plugin (the
   plugin's way of following each job, without the plugin).

Each mode ends when every job is inactive, and each checks that every job it
submitted finished successfully: otherwise the run fails (non-zero exit, no
rate printed). Between modes every job is purged, so each starts from an empty
job list. With ``repeats`` > 1 the modes alternate that many times in the same
instance (a noisy machine then shows in the spread of the per-round ratios);
even rounds run them in reverse order, since the instance slows a little as it
ages (its KVS keeps the objects of purged jobs in its cache for a while), and
the machine's 1-minute load average is recorded around each round. The plugin
mode checks that it really ran with alloc-bypass (and the scheduler-matching
mode without): a mode that took the other path fails the run.
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

from _frontier import workload

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
{load_scheduler}
until flux queue status | grep -q "Scheduling is started"; do sleep 0.5; done
"""

#: how each scheduler is loaded into the test instance
SCHEDULERS = {
    "fluxion": "flux module load sched-fluxion-resource\nflux module load sched-fluxion-qmanager",
    "simple": "flux module load sched-simple",
}

#: test-execution seconds per declared runtime second
TIME_SCALE = 1 / 600

#: the modes of a round, in the order they run
MODES = ("plugin", "plugin_scheduled", "raw", "executor")

#: test hook: the plugin's backend raises at this launch (1-based), so that a
#: test sees a crashed plugin run fail the benchmark
FAIL_AT_LAUNCH = "MATENSEMBLE_BENCH_FAIL_AT_LAUNCH"


class Unfinished(RuntimeError):
    """A mode did not see every one of its jobs finish successfully."""


class WrongPath(RuntimeError):
    """The plugin did not take the path its mode measures (alloc-bypass on or off)."""


def with_flux_bindings(flux: str, env: dict[str, str]) -> dict[str, str]:
    """``env`` with the PYTHONPATH that ``flux env`` gives ``flux``'s own Python
    bindings put first (so that a subprocess imports the instance's ``flux``)."""
    for line in subprocess.run([flux, "env"], capture_output=True, text=True).stdout.splitlines():
        if line.startswith("export PYTHONPATH="):
            flux_path = shlex.split(line.split("=", 1)[1])[0]
            env["PYTHONPATH"] = os.pathsep.join(p for p in (flux_path, env.get("PYTHONPATH")) if p)
    return env


def run_in_flux(
    nodes: int,
    cores: int,
    gpus: int,
    jobs: int,
    seed: int,
    repeats: int = 1,
    scheduler: str = "fluxion",
) -> list[dict]:
    """Start the instance, run the modes inside it ``repeats`` times, return the
    figures of each round; SystemExit if the run failed or a job did not finish."""
    flux = shutil.which("flux")
    if flux is None:
        raise SystemExit("--flux needs the flux command on PATH (flux-core with Fluxion)")
    env = with_flux_bindings(flux, dict(os.environ))
    inside = " ".join(
        shlex.quote(a)
        for a in (sys.executable, __file__, str(nodes), str(jobs), str(seed), str(repeats))
    )
    setup = FAKE_MACHINE.format(
        nodes=nodes, cores=cores, gpus=gpus, load_scheduler=SCHEDULERS[scheduler]
    )
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
    """Counts the plugin's finished jobs (each once) and failures; says when all are done."""

    def __init__(self, jobs: int):
        self.jobs = jobs
        self.finished: set[int] = set()
        self.failed = 0
        self.crash: BaseException | None = None
        self.done = threading.Event()

    def on_started(self, ticket, backend_id, time, instance="") -> None:
        pass

    def on_finished(self, ticket, result) -> None:
        self.finished.add(ticket.key)
        self.failed += not result.ok
        if len(self.finished) == self.jobs:
            self.done.set()

    def on_withdrawn(self, tickets, reason) -> None:
        self.failed += len(tickets)
        self.done.set()

    def on_crash(self, error, tickets) -> None:
        self.crash = error
        self.done.set()

    def on_tick(self) -> None:
        pass

    def check(self, mode: str) -> None:
        """Raise :class:`Unfinished` unless every job finished successfully."""
        if self.crash is not None or self.failed or len(self.finished) != self.jobs:
            raise Unfinished(
                f"{mode}: {len(self.finished)} of {self.jobs} jobs finished, {self.failed} "
                f"failed or withdrawn, crash: {self.crash!r}"
            )


def _settle() -> None:
    """Every job inactive, and purged: each mode starts from an empty job list
    (Flux slows down as inactive jobs pile up)."""
    subprocess.run(["flux", "queue", "drain"], check=True)
    subprocess.run(["flux", "job", "purge", "--force", "--num-limit=0", "--batch=100"], check=True)


def _inside(nodes: int, jobs: int, seed: int, repeats: int) -> list[dict]:
    return [_one_round(nodes, jobs, seed, number) for number in range(1, repeats + 1)]


class _Round:
    """The jobs of one round and how each mode runs them."""

    def __init__(self, nodes: int, jobs: int, seed: int):
        import flux
        import flux.hostlist
        import flux.job
        import flux.resource

        self.flux = flux
        self.nodes, self.jobs = nodes, jobs
        self.mix = workload(jobs, seed)
        self.durations = {
            key: max(0.01, runtime * TIME_SCALE) for key, (_, runtime, _) in enumerate(self.mix)
        }
        self.logs = Path(os.environ.get("TMPDIR", "/tmp")) / f"matensemble-flux-bench-{os.getpid()}"
        self.tickets = [JobTicket(key, request) for key, (request, _, _) in enumerate(self.mix)]
        #: the instance's nodes, as the plugin sees them (the raw jobspecs' shapes)
        self.specs = self._discover()

    def _discover(self) -> list:
        from snakemake_executor_plugin_matensemble.backends.flux.resources import nodes_from_rset

        up = self.flux.resource.resource_list(self.flux.Flux()).get().up
        hosts = self.flux.hostlist.Hostlist
        return nodes_from_rset(json.loads(up.encode()), lambda entry: list(hosts(entry)))

    def run(self, mode: str) -> tuple[float, float | None]:
        """Wall seconds of ``mode`` (one of :data:`MODES`) running every job, and
        the plugin's dispatcher CPU seconds (None for the modes without it)."""
        if mode == "plugin":
            return self.plugin()
        if mode == "plugin_scheduled":
            return self.plugin(alloc_bypass=False)
        jobspecs = self.jobspecs()
        return (self.raw(jobspecs) if mode == "raw" else self.executor(jobspecs)), None

    def spec_for(self, ticket: JobTicket) -> LaunchSpec:
        return LaunchSpec(
            ticket.key, "true", f"sim{ticket.key}", "/", {}, str(self.logs / "log"), ticket.request
        )

    def test_execution_backend(self, options, run_id: str, per_instance: dict | None = None):
        """The plugin's FluxBackend with every job in Flux's test execution for its
        duration (``FAIL_AT_LAUNCH``: that launch raises); ``per_instance``
        counts the jobs launched in each instance, by name."""
        from snakemake_executor_plugin_matensemble.backends.flux.backend import FluxBackend

        durations = self.durations
        fail_at = int(os.environ.get(FAIL_AT_LAUNCH, "0"))
        launches = [0]

        class TestExecution(FluxBackend):
            def jobspec(self, spec, placement, depends_on=None):
                jobspec = super().jobspec(spec, placement, depends_on)
                jobspec.setattr("system.exec.test.run_duration", f"{durations[spec.key]:.3f}s")
                return jobspec

            def launch(self, spec, placement, after=None):
                launches[0] += 1
                if launches[0] == fail_at:
                    raise RuntimeError(f"{FAIL_AT_LAUNCH}: launch {fail_at} fails")
                if per_instance is not None:
                    name = self.instance_for(placement).name
                    per_instance[name] = per_instance.get(name, 0) + 1
                return super().launch(spec, placement, after)

        return TestExecution(options, run_id=run_id)

    def drive(self, backend, allocation: Allocation, mode: str) -> tuple[float, float]:
        """Wall and dispatcher CPU seconds of the plugin's dispatcher and packer
        running every job through ``backend`` (closed after); raises unless
        every job finished successfully."""
        from snakemake_executor_plugin_matensemble.packing.deadline import RuntimeEstimator
        from snakemake_executor_plugin_matensemble.packing.ordering import make_order
        from snakemake_executor_plugin_matensemble.settings import ExecutorSettings

        order = make_order(ExecutorSettings.order, RuntimeEstimator())
        packer = Packer(allocation, BackfillPolicy(60.0), order=order)
        listener = _Listener(self.jobs)
        dispatcher = Dispatcher(packer, backend, listener, self.spec_for, idle_timeout=1.0)
        began = time.perf_counter()
        dispatcher.submit(list(self.tickets))
        dispatcher.start()
        while not listener.done.wait(1.0) and dispatcher.alive:
            pass
        wall = time.perf_counter() - began
        cpu = dispatcher.cpu_s
        dispatcher.stop(timeout=30)
        backend.close()
        listener.check(mode)
        return wall, cpu

    def plugin(self, **options) -> tuple[float, float]:
        """Wall and dispatcher CPU seconds of the plugin running every job."""
        from snakemake_executor_plugin_matensemble.backends.flux.options import FluxOptions

        backend = self.test_execution_backend(FluxOptions(**options), run_id="bench")
        allocation = Allocation(backend.discover())
        mode = "plugin" if options.get("alloc_bypass", True) else "plugin_scheduled"
        if backend.enclosing.bypass != options.get("alloc_bypass", True):
            backend.close()
            raise WrongPath(
                f"{mode}: alloc-bypass is {'on' if backend.enclosing.bypass else 'off'}"
            )
        return self.drive(backend, allocation, mode)

    def jobspecs(self) -> list:
        """The plugin's jobspecs of every job, without rank pinning or R."""
        from snakemake_executor_plugin_matensemble.backends.flux.jobspec import build_jobspec
        from snakemake_executor_plugin_matensemble.backends.flux.options import FluxOptions

        unpinned = FluxOptions(pin_ranks=False)
        idle = Allocation(self.specs)
        jobspecs = []
        for ticket in self.tickets:
            jobspec = build_jobspec(
                self.flux.job.JobspecV1,
                self.spec_for(ticket),
                idle.place(ticket.request),
                unpinned,
                "raw",
            )
            jobspec.setattr("system.exec.test.run_duration", f"{self.durations[ticket.key]:.3f}s")
            jobspecs.append(jobspec)
        return jobspecs

    def raw(self, jobspecs: list) -> float:
        """Wall seconds of submitting ``jobspecs`` asynchronously until all are inactive."""
        handle = self.flux.Flux()
        began = time.perf_counter()
        futures = [self.flux.job.submit_async(handle, jobspec) for jobspec in jobspecs]
        ids = {future.get_id() for future in futures}
        subprocess.run(["flux", "queue", "drain"], check=True)
        wall = time.perf_counter() - began
        self._check_completed(handle, ids, "raw")
        return wall

    def executor(self, jobspecs: list) -> float:
        """Wall seconds of ``jobspecs`` through one FluxExecutor until all are done."""
        began = time.perf_counter()
        with self.flux.job.FluxExecutor() as executor:
            done = [executor.submit(jobspec) for jobspec in jobspecs]
            concurrent.futures.wait(done)
        wall = time.perf_counter() - began
        failed = [future for future in done if future.exception() or future.result() != 0]
        if failed:
            raise Unfinished(f"executor: {len(failed)} of {len(done)} jobs did not succeed")
        return wall

    def _check_completed(self, handle, ids: set[int], mode: str) -> None:
        listing = self.flux.job.job_list(
            handle, 0, ["result"], states=self.flux.constants.FLUX_JOB_STATE_INACTIVE
        ).get_jobs()
        completed = {
            job["id"]
            for job in listing
            if job.get("result") == self.flux.constants.FLUX_JOB_RESULT_COMPLETED
        }
        if not ids <= completed:
            raise Unfinished(f"{mode}: {len(ids - completed)} of {len(ids)} jobs did not complete")


def _one_round(nodes: int, jobs: int, seed: int, number: int = 1) -> dict:
    """Every mode once; odd rounds in :data:`MODES` order, even rounds reversed,
    so that no mode always runs first in a round (nor always right after
    another): the instance's state (e.g. the KVS's cache of earlier rounds'
    objects) and the machine's load then fall on every mode alike."""
    round_ = _Round(nodes, jobs, seed)
    order = MODES if number % 2 else tuple(reversed(MODES))
    figures: dict = {"nodes": nodes, "jobs": jobs, "order": list(order)}
    loads = [os.getloadavg()[0]]
    for mode in order:
        wall, cpu = round_.run(mode)
        figures[f"{mode}_wall_s"] = wall
        if cpu is not None:
            figures[f"{mode}_cpu_s"] = cpu
        _settle()
        loads.append(os.getloadavg()[0])
    figures["load"] = [min(loads), max(loads)]
    return figures


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        print(json.dumps(_inside(*(int(a) for a in sys.argv[1:5]))))
    except Unfinished as error:
        raise SystemExit(f"not every job finished: {error}") from error
    except WrongPath as error:
        raise SystemExit(f"the plugin did not run as its mode says: {error}") from error
