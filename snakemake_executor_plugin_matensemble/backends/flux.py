"""The Flux backend: every job a Flux job, all through ONE ``FluxExecutor``.

* Resources come from Flux itself (``flux.resource.resource_list``): per rank
  the cores and GPU ids that are up (not down or drained), read once at start.
* Each job is a ``JobspecV1`` with the packer's shape (tasks, cores and GPUs per
  task, nodes, exclusive), walltime, cwd, environment, log file, a name showing
  rule and wildcards, user attributes tying it to the Snakemake job, CPU/GPU
  affinity per task, and a ``ranks`` constraint pinning it to the ranks the
  packer chose, so Flux's placement and the packer's model cannot drift apart.
* Outcomes arrive as future callbacks from the executor's thread and wake the
  dispatcher; a status loop never polls and never crashes on an exception.
* Cancel uses ``flux.job.cancel`` on every job of the run, not only
  ``future.cancel()``, and waits until Flux reports them gone.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..allocation import NodeSpec, Placement
from .base import (
    Backend,
    BackendEvent,
    JobFinished,
    JobStarted,
    LaunchError,
    LaunchSpec,
    RunningJob,
    Status,
    WakePipe,
)
from .local_resources import parse_id_list

log = logging.getLogger("snakemake.logging.matensemble.flux")

#: errno values that mean the Flux instance itself is gone, not the job
LOST_INSTANCE_ERRNOS = frozenset(
    {errno.ENOSYS, errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN, errno.EHOSTUNREACH}
)


@dataclass(frozen=True)
class FluxOptions:
    """The Flux-specific settings of a run."""

    queue: str | None = None
    bank: str | None = None
    urgency: int | None = None
    shell_options: tuple[tuple[str, str], ...] = ()
    reserve_cores: int = 1
    pin_ranks: bool = True
    pmi: str | None = None
    lookahead: bool = True
    cancel_timeout: float = 30.0


def parse_shell_options(text: str | None) -> tuple[tuple[str, str], ...]:
    """``"verbose=1,signal=SIGUSR1@60"`` -> ``(("verbose", "1"), ...)``."""
    if not text:
        return ()
    options = []
    for item in text.split(","):
        key, _, value = item.strip().partition("=")
        if key:
            options.append((key.strip(), value.strip() or "1"))
    return tuple(options)


def nodes_from_rset(
    rset_json: dict[str, Any], expand_hostlist: Callable[[str], list[str]]
) -> list[NodeSpec]:
    """Per-rank cores and GPU ids of an Rv1 resource set (``R_lite``)."""
    execution = rset_json.get("execution", {})
    hostnames = [host for entry in execution.get("nodelist", []) for host in expand_hostlist(entry)]
    per_rank: dict[int, tuple[list[int], list[str]]] = {}
    for entry in execution.get("R_lite", []):
        children = entry.get("children", {})
        cores = parse_id_list(children.get("core", ""))
        gpus = [str(g) for g in parse_id_list(children.get("gpu", ""))]
        for rank in parse_id_list(str(entry["rank"])):
            have_cores, have_gpus = per_rank.setdefault(rank, ([], []))
            have_cores.extend(cores)
            have_gpus.extend(gpus)
    ranks = sorted(per_rank)
    return [
        NodeSpec(
            rank=rank,
            name=hostnames[i] if i < len(hostnames) else f"rank{rank}",
            cores=tuple(sorted(set(per_rank[rank][0]))),
            gpus=tuple(per_rank[rank][1]),
        )
        for i, rank in enumerate(ranks)
    ]


def reserve_own_cores(nodes: list[NodeSpec], rank: int, count: int) -> list[NodeSpec]:
    """Leave ``count`` cores of ``rank`` to Snakemake and the broker (never all)."""
    result = []
    for node in nodes:
        if node.rank == rank and count > 0:
            keep = max(1, len(node.cores) - count)
            if keep < len(node.cores):
                log.info(
                    f"matensemble: keeping {len(node.cores) - keep} core(s) of rank "
                    f"{rank} ({node.name}) free for Snakemake and the Flux broker "
                    "(--matensemble-flux-reserve-cores)."
                )
            node = NodeSpec(node.rank, node.name, node.cores[:keep], node.gpus)
        result.append(node)
    return result


def job_name(name: str) -> str:
    """Flux job names are shown in one column: keep them short and printable."""
    printable = "".join(c if c.isprintable() and not c.isspace() else "_" for c in name)
    return printable[:80]


class FluxBackend(Backend):
    """Runs every job as a Flux job of the enclosing instance."""

    name = "flux"
    can_attach = True

    def __init__(self, options: FluxOptions, run_id: str = "", flux_module: Any = None):
        if flux_module is None:
            import flux
            import flux.hostlist
            import flux.job
            import flux.resource

            flux_module = flux
        self.flux = flux_module
        self.options = options
        self.run_id = run_id
        self.handle = self.flux.Flux()
        self.executor = self.flux.job.FluxExecutor(poll_interval=0.002)
        log.info("matensemble: started one FluxExecutor for the run.")
        self._events: queue.SimpleQueue[BackendEvent] = queue.SimpleQueue()
        self._wake = WakePipe()
        self._lock = threading.Lock()
        self._futures: dict[int, Any] = {}
        self._jobids: dict[int, int] = {}
        self._specs: dict[int, LaunchSpec] = {}
        self._cancelling = False
        self._instance_lost = False
        #: successors waiting for their predecessor's Flux id: key -> [(spec, placement)]
        self._deferred: dict[int, list[tuple[LaunchSpec, Placement]]] = {}

    @classmethod
    def from_settings(cls, settings: Any, run_id: str = "") -> FluxBackend:
        return cls(
            FluxOptions(
                queue=settings.flux_queue,
                bank=settings.flux_bank,
                urgency=settings.flux_urgency,
                shell_options=parse_shell_options(settings.flux_shell_options),
                reserve_cores=settings.flux_reserve_cores,
                pin_ranks=not settings.flux_no_pin_ranks,
                pmi=settings.flux_pmi,
                lookahead=not settings.flux_no_lookahead,
                cancel_timeout=max(settings.kill_grace_seconds * 3, 10.0),
            ),
            run_id=run_id,
        )

    # -- discovery --------------------------------------------------------------
    def discover(self) -> list[NodeSpec]:
        resources = self.flux.resource.resource_list(self.handle).get()
        up = json.loads(resources.up.encode())
        nodes = nodes_from_rset(up, lambda entry: list(self.flux.hostlist.Hostlist(entry)))
        if not nodes:
            raise LaunchError("the Flux instance has no resources that are up")
        own_rank = self.handle.get_rank()
        return reserve_own_cores(nodes, own_rank, self.options.reserve_cores)

    @property
    def running_count(self) -> int:
        with self._lock:
            return len(self._futures) + sum(len(v) for v in self._deferred.values())

    @property
    def supports_lookahead(self) -> bool:  # type: ignore[override]
        return self.options.lookahead

    # -- jobspec ----------------------------------------------------------------
    def jobspec(self, spec: LaunchSpec, placement: Placement) -> Any:
        """The ``JobspecV1`` for ``spec`` on ``placement`` (setters only, so that
        flux-python versions without the newer keywords work too)."""
        request = spec.request
        JobspecV1 = self.flux.job.JobspecV1
        command = [spec.shell, "-c", spec.command]
        nodes = len(placement.shares) if (request.nodes or request.exclusive) else None
        if request.exclusive:
            nodes = request.nodes or len(placement.shares)
        if spec.per_task or request.tasks == 1:
            jobspec = JobspecV1.from_command(
                command,
                num_tasks=request.tasks if spec.per_task else 1,
                cores_per_task=request.cores_per_task if spec.per_task else request.total_cores,
                gpus_per_task=(request.gpus_per_task if spec.per_task else request.total_gpus)
                or None,
                num_nodes=nodes,
                exclusive=request.exclusive,
            )
        else:
            # The command starts its own ranks ({resources.mpi} -n {resources.tasks}
            # or a per-job Snakemake process): give it a Flux instance of that size,
            # in which `flux run` (and single-node mpiexec) work.
            jobspec = JobspecV1.from_nest_command(
                command,
                num_slots=request.tasks,
                cores_per_slot=request.cores_per_task,
                gpus_per_slot=request.gpus_per_task or None,
                num_nodes=nodes,
                exclusive=request.exclusive,
            )
        if request.walltime_s is not None:
            jobspec.duration = request.walltime_s
        jobspec.cwd = spec.cwd
        jobspec.environment = dict(spec.env)
        jobspec.stdout = spec.log_path
        jobspec.setattr("system.job.name", job_name(spec.name))
        jobspec.setattr(
            "user.snakemake",
            {"run": self.run_id, "key": spec.key, "name": spec.name, **dict(spec.attributes)},
        )
        if self.options.queue:
            jobspec.setattr("system.queue", self.options.queue)
        if self.options.bank:
            jobspec.setattr("system.bank", self.options.bank)
        if self.options.pin_ranks:
            ranks = ",".join(str(rank) for rank in placement.ranks)
            jobspec.setattr("system.constraints", {"ranks": [ranks]})
        jobspec.setattr_shell_option("cpu-affinity", "per-task")
        if request.gpus_per_task:
            jobspec.setattr_shell_option("gpu-affinity", "per-task")
        if self.options.pmi:
            jobspec.setattr_shell_option("pmi", self.options.pmi)
        for key, value in self.options.shell_options:
            jobspec.setattr_shell_option(key, _option_value(value))
        return jobspec

    # -- launching --------------------------------------------------------------
    def urgency(self, spec: LaunchSpec) -> int:
        """The setting if given, else Flux's default moved by the job's priority."""
        if self.options.urgency is not None:
            return self.options.urgency
        return max(1, min(31, 16 + spec.priority)) if spec.priority else 16

    def launch(self, spec: LaunchSpec, placement: Placement, after: int | None = None) -> str:
        os.makedirs(os.path.dirname(os.path.abspath(spec.log_path)), exist_ok=True)
        depends_on = None
        if after is not None:
            with self._lock:
                if after in self._futures and after not in self._jobids:
                    # the predecessor has no Flux id yet: submit once it has
                    self._deferred.setdefault(after, []).append((spec, placement))
                    return f"deferred:{spec.key}"
                depends_on = self._jobids.get(after) if after in self._futures else None
        self._submit(spec, placement, depends_on)
        return f"pending:{spec.key}"

    def _submit(self, spec: LaunchSpec, placement: Placement, depends_on: int | None) -> None:
        try:
            jobspec = self.jobspec(spec, placement)
            if depends_on is not None:
                # starts the moment the predecessor ends, on its resources
                jobspec.setattr(
                    "system.dependencies", [{"scheme": "afterany", "value": str(depends_on)}]
                )
            future = self.executor.submit(jobspec, urgency=self.urgency(spec))
        except RuntimeError as error:  # the executor is broken: the instance is gone
            raise LaunchError(self._lost(error)) from error
        except (ValueError, TypeError, OSError) as error:
            raise LaunchError(f"could not be submitted to Flux: {error}") from error
        self._follow(spec, future)

    def _submit_deferred(self, predecessor: int, depends_on: int | None) -> None:
        """Submit the successors that waited for ``predecessor``'s Flux id."""
        with self._lock:
            waiting = self._deferred.pop(predecessor, [])
        for spec, placement in waiting:
            try:
                self._submit(spec, placement, depends_on)
            except LaunchError as error:
                self._push(JobFinished(spec.key, Status.LAUNCH_ERROR, str(error), time=time.time()))

    def _follow(self, spec: LaunchSpec, future: Any) -> None:
        with self._lock:
            self._futures[spec.key] = future
            self._specs[spec.key] = spec
        future.add_jobid_callback(lambda f, key=spec.key: self._on_jobid(key, f))
        future.add_event_callback(
            "start", lambda f, event, key=spec.key: self._on_start(key, f, event)
        )
        future.add_done_callback(lambda f, key=spec.key: self._on_done(key, f))

    # -- re-attaching -------------------------------------------------------------
    def find_running(self, backend_id: str) -> RunningJob | None:
        """A pending or running Flux job of an earlier run (``backend_id``: its id)."""
        try:
            jobid = self.flux.job.JobID(backend_id)
            info = self.flux.job.job_list_id(self.handle, jobid).get_jobinfo()
        except (OSError, ValueError, TypeError) as error:
            log.debug(f"matensemble: Flux job {backend_id} cannot be re-attached: {error}")
            return None
        if info.state in ("INACTIVE", "CLEANUP"):
            return None
        ranks = tuple(int(r) for r in info.ranks) if info.ranks else ()
        nodes = max(1, len(ranks))
        return RunningJob(
            backend_id=jobid.f58,
            ranks=ranks,
            cores_per_rank=info.ncores // nodes,
            gpus_per_rank=(getattr(info, "ngpus", 0) or 0) // nodes,
            started_at=info.t_run or time.time(),
        )

    def attach(self, spec: LaunchSpec, job: RunningJob) -> None:
        log.info(f"matensemble: re-attached to Flux job {job.backend_id} ({spec.name}).")
        self._follow(spec, self.executor.attach(self.flux.job.JobID(job.backend_id)))

    def _on_jobid(self, key: int, future: Any) -> None:
        jobid = future.jobid()
        with self._lock:
            self._jobids[key] = jobid
            cancel_now = self._cancelling
        if cancel_now:
            self._cancel_one(jobid)
        self._submit_deferred(key, jobid)

    def _on_start(self, key: int, future: Any, event: Any) -> None:
        jobid = self.flux.job.JobID(future.jobid())
        self._push(JobStarted(key, jobid.f58, event.timestamp))

    def _on_done(self, key: int, future: Any) -> None:
        with self._lock:
            self._futures.pop(key, None)
            spec = self._specs.pop(key, None)
            jobid = self._jobids.pop(key, None)
        self._push(self.outcome(key, future, spec, jobid))
        self._submit_deferred(key, None)  # never got a Flux id: nothing to wait for

    def _push(self, event: BackendEvent) -> None:
        self._events.put(event)
        self._wake.wake()

    def outcome(
        self, key: int, future: Any, spec: LaunchSpec | None, jobid: int | None
    ) -> JobFinished:
        """Map a finished future to a :class:`JobFinished` (never raises)."""
        where = f"Flux job {self.flux.job.JobID(jobid).f58}" if jobid else "Flux job"
        now = time.time()
        if future.cancelled():
            return JobFinished(
                key, Status.CANCELLED, "was cancelled before it reached Flux", time=now
            )
        error = future.exception()
        if error is None:
            code = future.result()
            if code == 0:
                return JobFinished(key, Status.SUCCESS, f"{where} succeeded", 0, None, now)
            if code < 0:
                return JobFinished(
                    key, Status.FAILED, f"({where}) was killed by signal {-code}", None, -code, now
                )
            return JobFinished(
                key, Status.FAILED, f"({where}) exited with code {code}", code, None, now
            )
        if isinstance(error, self.flux.job.JobException):
            return self._exception_outcome(key, error, where, spec, now)
        if isinstance(error, OSError) and error.errno in LOST_INSTANCE_ERRNOS:
            return JobFinished(key, Status.FAILED, self._lost(error), time=now)
        if isinstance(error, OSError):
            return JobFinished(key, Status.LAUNCH_ERROR, f"was rejected by Flux: {error}", time=now)
        return JobFinished(key, Status.FAILED, f"({where}) failed: {error!r}", time=now)

    def _lost(self, error: BaseException) -> str:
        """The reason for jobs whose Flux instance stopped answering (said once)."""
        uri = os.environ.get("FLUX_URI", "?")
        reason = (
            f"was lost with the Flux instance at {uri}, which stopped answering ({error}); "
            "run again in a new allocation (add --rerun-incomplete)"
        )
        with self._lock:
            first, self._instance_lost = not self._instance_lost, True
        if first:
            log.error(f"matensemble: the Flux instance at {uri} stopped answering ({error}).")
        return reason

    def _exception_outcome(self, key, error, where, spec, now) -> JobFinished:
        kind, note = error.type, error.note
        if kind == "timeout":
            walltime = spec.request.walltime_s if spec else None
            limit = f"{walltime / 60:g} min" if walltime else "its time limit"
            return JobFinished(
                key, Status.TIMEOUT, f"exceeded its runtime of {limit} ({where}: {note})", time=now
            )
        if kind == "cancel" and not self._cancelling and not note:
            # not cancelled by us: the instance cancels everything when it shuts down
            return JobFinished(
                key,
                Status.FAILED,
                f"was cancelled by Flux ({where}); is the instance shutting down?",
                time=now,
            )
        if kind == "cancel" or self._cancelling:
            return JobFinished(key, Status.CANCELLED, f"was cancelled ({where}: {note})", time=now)
        if kind == "exec":
            return JobFinished(
                key, Status.FAILED, f"could not be started by Flux ({where}: {note})", time=now
            )
        return JobFinished(
            key, Status.FAILED, f"hit a Flux job exception ({where}, type={kind}: {note})", time=now
        )

    # -- waiting ----------------------------------------------------------------
    def wake(self) -> None:
        self._wake.wake()

    def wait(self, timeout: float | None) -> list[BackendEvent]:
        events = self._drain()
        if events:
            return events
        self._wake.wait(timeout)
        return self._drain()

    def _drain(self) -> list[BackendEvent]:
        events = []
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                return events

    # -- stopping ---------------------------------------------------------------
    def _cancel_one(self, jobid: int) -> None:
        try:
            self.flux.job.cancel(self.handle, jobid, "snakemake run cancelled")
        except OSError as error:  # already inactive
            log.debug(f"matensemble: cancel of Flux job {jobid}: {error}")

    def cancel_all(self) -> list[JobFinished]:
        with self._lock:
            self._cancelling = True
            jobids = list(self._jobids.values())
            futures = list(self._futures.values())
        for future in futures:
            future.cancel()  # only succeeds for jobs not yet handed to Flux
        for jobid in jobids:
            self._cancel_one(jobid)
        deadline = time.time() + self.options.cancel_timeout
        finished: list[JobFinished] = []
        while self.running_count and time.time() < deadline:
            finished.extend(e for e in self.wait(0.2) if isinstance(e, JobFinished))
        finished.extend(e for e in self._drain() if isinstance(e, JobFinished))
        if self.running_count:
            log.warning(
                f"matensemble: {self.running_count} Flux job(s) did not end within "
                f"{self.options.cancel_timeout:g} s of being cancelled."
            )
        return finished

    def close(self) -> None:
        if self.running_count:
            self.cancel_all()
        self.executor.shutdown(wait=True, cancel_futures=True)
        self._wake.close()


def _option_value(value: str) -> Any:
    """Shell option values as JSON where they parse (numbers, booleans)."""
    try:
        return json.loads(value)
    except ValueError:
        return value
