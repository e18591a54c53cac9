"""``full_machine.py --flux JOBS --children K``: the plugin with K child instances.

The enclosing instance is the one of ``_flux_fake.py``: one broker whose R
claims NODES fake nodes (``resource.noverify``, Fluxion or sched-simple). Fake
nodes cannot host a child's brokers, so the K children are started beside it,
each a separate one-broker test instance (``flux start --test-size=1``, not a
job of the enclosing instance) whose R claims its node group (the enclosing
ranks of :func:`split_ranks`, same host names, its own ranks 0..n-1) with the
same scheduler. The plugin attaches to them through the code it uses for
children it starts itself: a :class:`ChildInstance` (``jobid`` None: never
watched nor cancelled by the run) whose URI goes through the carrier
(``FLUX_SSH``: Flux's ssh connector, ``flux relay`` on the enclosing rank 0
through the enclosing instance's ``rexec``), a :class:`ChildSet` of them, and
``FluxBackend.use_children``. Jobs run in Flux's test execution mode.

Modes of a round (same seeded jobs, each from an empty job list):

1. ``plugin_children``: the plugin (dispatcher, packer, allocation of all
   NODES nodes, FluxBackend with the K children; each job in the child that
   owns all its nodes, its R given (alloc-bypass, chosen per child); a job
   over two children in the enclosing instance);
2. ``plugin``: the same plugin on the enclosing instance alone;
3. ``raw``: the single instance's raw rate: the plugin's jobspecs without
   rank pinning or R, submitted asynchronously to the enclosing instance
   until every job is inactive (as ``_flux_fake.py``).

Real: every broker, scheduler, job manager and job-exec (test execution), the
relays (carrier, ``rexec``, ``flux relay``), the plugin. Not real: the nodes
(fake), job shells and processes (test execution runs none). Any job not
finished successfully fails the run (non-zero exit, no rate printed).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _flux_fake import (
    FAKE_MACHINE,
    SCHEDULERS,
    Unfinished,
    WrongPath,
    _Round,
    _settle,
    with_flux_bindings,
)

from snakemake_executor_plugin_matensemble.backends.flux.children.groups import idset
from snakemake_executor_plugin_matensemble.packing.allocation import Allocation

#: a child: one broker whose R claims enclosing ranks FIRST.. as its ranks 0..SIZE-1
CHILD_MACHINE = """
set -euo pipefail
R=$(mktemp -t fake-child-R.XXXXXX.json)
flux R encode --ranks=0-$(({size} - 1)) --cores=0-$(({cores} - 1)) --gpu=0-$(({gpus} - 1)) \\
  --hosts={hosts} > "$R"
for m in sched-fluxion-qmanager sched-fluxion-resource sched-simple; do
  flux module remove "$m" 2>/dev/null || true
done
flux module reload resource noverify monitor-force-up
flux resource reload -f "$R" 2>/dev/null
{load_scheduler}
until flux queue status | grep -q "Scheduling is started"; do sleep 0.5; done
flux getattr local-uri > {out}.tmp && mv {out}.tmp {out}
exec sleep inf
"""

#: the modes of a round (round r starts with mode r mod 3)
MODES = ("plugin_children", "plugin", "raw")
#: a trial of another node layout: each child owns blocks of this many
#: consecutive ranks, dealt round-robin (unset or 0: the plugin's own
#: consecutive groups of :func:`split_ranks`)
CHILD_BLOCK = "MATENSEMBLE_BENCH_CHILD_BLOCK"
#: seconds a child may take to load its nodes and post its URI
CHILD_START_S = 600


def flux_environment() -> tuple[str, dict[str, str]]:
    """The ``flux`` command and an environment in which its Python bindings import."""
    flux = shutil.which("flux")
    if flux is None:
        raise SystemExit("--flux needs the flux command on PATH (flux-core with Fluxion)")
    env = with_flux_bindings(flux, dict(os.environ))
    return flux, env


def run_children_in_flux(
    nodes: int,
    cores: int,
    gpus: int,
    jobs: int,
    seed: int,
    repeats: int,
    scheduler: str,
    children: int,
) -> list[dict]:
    """Start the enclosing instance, run the rounds inside it; the figures of
    each round. SystemExit if the run failed or a job did not finish."""
    flux, env = flux_environment()
    args = (nodes, cores, gpus, jobs, seed, repeats, children, scheduler)
    inside = shlex.join([sys.executable, __file__, *map(str, args)])
    setup = FAKE_MACHINE.format(
        nodes=nodes, cores=cores, gpus=gpus, load_scheduler=SCHEDULERS[scheduler]
    )
    out = subprocess.run(
        [flux, "start", "--test-size=1", "bash", "-c", f"{setup}\n{inside}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800 * (repeats + 1),
    )
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        raise SystemExit(f"the Flux run failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return json.loads(lines[-1])


def children_report(rounds: list[dict], scheduler: str) -> str:
    """A row per round and the median ratios."""
    first = rounds[0]
    layout = f" (blocks of {first['block']} ranks dealt round-robin)" if first["block"] else ""
    lines = [
        f"real Flux ({scheduler}), {first['nodes']:,} fake nodes, {first['children']} child "
        f"instance(s) of about {first['nodes'] // first['children']:,} fake nodes{layout}, "
        f"{first['jobs']:,} jobs in test execution, {len(rounds)} round(s), load average "
        f"after each round: {'; '.join(r['load'] for r in rounds)}:",
        "| round | first mode | plugin with children jobs/s | plugin, one instance jobs/s "
        "| raw, one instance jobs/s | children / raw | one instance / raw "
        "| jobs per child (enclosing) | plugin CPU ms/job, children / one instance "
        "| children started s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    ratios, single = [], []
    for number, figures in enumerate(rounds, 1):
        jobs = figures["jobs"]
        rates = {mode: jobs / figures[f"{mode}_wall_s"] for mode in MODES}
        ratios.append(rates["plugin_children"] / rates["raw"])
        single.append(rates["plugin"] / rates["raw"])
        spread = " / ".join(str(n) for n in figures["per_child"])
        lines.append(
            f"| {number} | {figures['order'][0]} | {rates['plugin_children']:.0f} "
            f"| {rates['plugin']:.0f} | {rates['raw']:.0f} | {ratios[-1]:.2f}x "
            f"| {single[-1]:.2f}x | {spread} ({figures['in_enclosing']}) "
            f"| {1000 * figures['plugin_children_cpu_s'] / jobs:.2f} / "
            f"{1000 * figures['plugin_cpu_s'] / jobs:.2f} | {figures['children_start_s']:.0f} |"
        )
    lines.append("CPU ms per job by part (last round): " + cpu_by_part(rounds[-1]))
    lines.append(
        f"median plugin with {first['children']} children / raw one instance: "
        f"{statistics.median(ratios):.2f}x (range {min(ratios):.2f}-{max(ratios):.2f}); "
        f"plugin one instance / raw: {statistics.median(single):.2f}x; "
        "every job of every mode finished"
    )
    return "\n".join(lines)


def cpu_by_part(figures: dict) -> str:
    """Each mode's CPU per job, by part (:func:`cpu_snapshot`)."""
    parts = []
    for mode in MODES:
        by_part = figures[f"{mode}_cpu_by_part_s"]
        values = " / ".join(f"{1000 * v / figures['jobs']:.2f}" for v in by_part.values())
        parts.append(f"{mode} {values}")
    return "; ".join(parts) + " (" + " / ".join(figures[f"{MODES[0]}_cpu_by_part_s"]) + ")"


# -- inside the enclosing instance ------------------------------------------------------------
def node_groups(nodes: int, count: int, block: int = 0) -> list[tuple[int, ...]]:
    """The enclosing ranks of each child: the plugin's :func:`split_ranks`, or
    (``block`` > 0) blocks of ``block`` consecutive ranks dealt round-robin."""
    from snakemake_executor_plugin_matensemble.backends.flux.children import split_ranks

    if not block:
        return split_ranks(list(range(nodes)), count)
    groups: list[list[int]] = [[] for _ in range(count)]
    for start in range(0, nodes, block):
        groups[(start // block) % count].extend(range(start, min(start + block, nodes)))
    return [tuple(group) for group in groups]


class FakeChildren:
    """K one-broker test instances beside the enclosing one, each claiming one
    node group; ended (their process groups) on exit."""

    def __init__(self, nodes: int, cores: int, gpus: int, count: int, scheduler: str):
        self.block = int(os.environ.get(CHILD_BLOCK) or 0)
        self.groups = node_groups(nodes, count, self.block)
        self.workdir = Path(tempfile.mkdtemp(prefix="matensemble-fake-children-"))
        self.processes: list[subprocess.Popen] = []
        self.local_uris: list[str] = []
        self.start_s = 0.0
        self.cores, self.gpus, self.scheduler = cores, gpus, scheduler

    def __enter__(self) -> FakeChildren:
        began = time.perf_counter()
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLUX_URI")}
        outs = []
        for index, group in enumerate(self.groups):
            out = self.workdir / f"uri-c{index}"
            hosts = f"node[{idset(group)}]"
            script = CHILD_MACHINE.format(
                size=len(group),
                cores=self.cores,
                gpus=self.gpus,
                hosts=hosts,
                load_scheduler=SCHEDULERS[self.scheduler],
                out=shlex.quote(str(out)),
            )
            self.processes.append(
                subprocess.Popen(
                    ["flux", "start", "--test-size=1", "bash", "-c", script],
                    env=env,
                    cwd=self.workdir,
                    start_new_session=True,
                    stdout=subprocess.DEVNULL,
                    stderr=open(self.workdir / f"c{index}.log", "w"),
                )
            )
            outs.append(out)
        deadline = time.monotonic() + CHILD_START_S
        for index, out in enumerate(outs):
            while not out.exists():
                if self.processes[index].poll() is not None or time.monotonic() > deadline:
                    log = (self.workdir / f"c{index}.log").read_text()[-2000:]
                    self.__exit__()
                    raise SystemExit(f"fake child c{index} did not come up:\n{log}")
                time.sleep(0.2)
            self.local_uris.append(out.read_text().strip())
        self.start_s = time.perf_counter() - began
        return self

    def __exit__(self, *exc: object) -> None:
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def child_set(self, parent_uri: str):
        """The children as the plugin's :class:`ChildSet` (attached, not started
        by the run), each reached through the carrier via enclosing rank 0."""
        from snakemake_executor_plugin_matensemble.backends.flux.children import (
            ChildInstance,
            ChildSet,
        )
        from snakemake_executor_plugin_matensemble.backends.flux.children.relay import (
            child_uri,
            local_path_of,
        )

        children = [
            ChildInstance(f"c{index}", None, group, child_uri(0, local_path_of(uri)))
            for index, (group, uri) in enumerate(zip(self.groups, self.local_uris, strict=True))
        ]
        return ChildSet.attached(parent_uri, children, self.workdir / "carrier")

    def settle(self) -> None:
        """Every child's jobs inactive and purged (the next mode starts clean)."""
        for uri in self.local_uris:
            env = dict(os.environ, FLUX_URI=uri)
            subprocess.run(["flux", "queue", "drain"], env=env, check=True)
            subprocess.run(
                ["flux", "job", "purge", "--force", "--num-limit=0"],
                env=env,
                check=True,
                capture_output=True,
            )


def plugin_with_children(round_: _Round, children) -> tuple[float, float, dict[str, int]]:
    """Wall and dispatcher CPU seconds of the plugin running every job with
    ``children`` (a :class:`ChildSet`) attached, and the jobs launched per
    instance (by name; ``enclosing``: jobs over more than one child)."""
    from snakemake_executor_plugin_matensemble.backends.flux.options import FluxOptions

    per_instance: dict[str, int] = {}
    options = FluxOptions(children="off")
    backend = round_.test_execution_backend(options, "bench-children", per_instance)
    allocation = Allocation(backend.discover())
    backend.use_children(children)
    scheduled = [name for name, i in backend.instances.items() if not i.bypass]
    if scheduled:
        backend.close()
        raise WrongPath(f"plugin_children: alloc-bypass is off in {', '.join(scheduled)}")
    wall, cpu = round_.drive(backend, allocation, "plugin_children")
    return wall, cpu, per_instance


def _inside(
    nodes: int, cores: int, gpus: int, jobs: int, seed: int, repeats: int, count: int, scheduler
) -> list[dict]:
    import flux

    parent_uri = flux.Flux().attr_get("local-uri")
    with FakeChildren(nodes, cores, gpus, count, scheduler) as fakes:
        children = fakes.child_set(parent_uri)
        return [
            _one_round(_Round(nodes, jobs, seed), fakes, children, number)
            for number in range(repeats)
        ]


def _cpu_of(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _brokers_under(pid: int) -> list[int]:
    """The flux-broker processes among ``pid``'s children."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [
        int(c) for c in children if Path(f"/proc/{c}/comm").read_text().startswith("flux-broker")
    ]


def _enclosing_broker() -> int:
    """The broker of the enclosing instance: the nearest flux-broker ancestor."""
    pid = os.getppid()
    while pid > 1:
        if Path(f"/proc/{pid}/comm").read_text().startswith("flux-broker"):
            return pid
        pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return 0


def cpu_snapshot(fakes: FakeChildren) -> dict[str, float]:
    """CPU seconds so far: this process (the plugin, its executors, raw
    submission), its reaped subprocesses (relays, once they end; ``flux`` commands),
    the enclosing broker, all child brokers."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    brokers = [b for p in fakes.processes for b in _brokers_under(p.pid)]
    return {
        "benchmark process": own.ru_utime + own.ru_stime,
        "reaped subprocesses": reaped.ru_utime + reaped.ru_stime,
        "enclosing broker": _cpu_of(_enclosing_broker()),
        "child brokers": sum(_cpu_of(b) for b in brokers),
    }


def _one_round(round_: _Round, fakes: FakeChildren, children, number: int) -> dict:
    """The modes once each, the first one rotating with ``number`` (a mode that
    runs later in the process is not always the same one)."""
    figures: dict = {
        "nodes": round_.nodes,
        "jobs": round_.jobs,
        "children": len(children.children),
        "block": fakes.block,
        "children_start_s": fakes.start_s,
    }

    def plugin_children() -> None:
        wall, cpu, launched = plugin_with_children(round_, children)
        figures.update(plugin_children_wall_s=wall, plugin_children_cpu_s=cpu)
        figures["per_child"] = [launched.get(c.name, 0) for c in children.children]
        figures["in_enclosing"] = launched.get("enclosing", 0)

    def plugin() -> None:
        wall, cpu = round_.plugin()
        figures.update(plugin_wall_s=wall, plugin_cpu_s=cpu)

    def raw() -> None:
        figures["raw_wall_s"] = round_.raw(round_.jobspecs())

    modes = [plugin_children, plugin, raw]
    for mode in modes[number % 3 :] + modes[: number % 3]:
        before = cpu_snapshot(fakes)
        mode()
        after = cpu_snapshot(fakes)
        figures[f"{mode.__name__}_cpu_by_part_s"] = {
            part: after[part] - before[part] for part in before
        }
        fakes.settle()
        _settle()
    figures["order"] = [m.__name__ for m in modes[number % 3 :] + modes[: number % 3]]
    figures["load"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return figures


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    nodes, cores, gpus, jobs, seed, repeats, count = (int(a) for a in sys.argv[1:8])
    try:
        print(json.dumps(_inside(nodes, cores, gpus, jobs, seed, repeats, count, sys.argv[8])))
    except Unfinished as error:
        raise SystemExit(f"not every job finished: {error}") from error
    except WrongPath as error:
        raise SystemExit(f"the plugin did not take the measured path: {error}") from error
