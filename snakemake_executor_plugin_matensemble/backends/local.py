"""The local backend: every job a process group on exactly the cores it was given.

Used wherever no Flux instance is reachable (a laptop, CI). Each job runs in
its own process group with its CPU affinity set to its cores (inherited from
the launching thread, so no process of the job ever runs elsewhere), its GPU
ids in ``CUDA_VISIBLE_DEVICES``/``HIP_VISIBLE_DEVICES``/``ROCR_VISIBLE_DEVICES``,
stdout and stderr in one log, and its walltime enforced (SIGTERM, then SIGKILL
after a grace period). An :class:`~.orphan_guard.OrphanGuard` stops the jobs
if Snakemake itself is killed.

Clocks: walltime deadlines and kill times are ``time.monotonic()`` seconds
(never moved by a wall-clock change); the times reported in
:class:`JobStarted`/:class:`JobFinished` are ``time.time()`` seconds since the
epoch (the journal's clock). Every duration is in seconds.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import os
import selectors
import signal
import socket
import subprocess
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from ..cpulist import format_cpu_list
from ..errors import BackendUnavailableError
from ..packing.nodes import NodeSpec, Placement
from .base import (
    Backend,
    BackendEvent,
    JobFinished,
    JobStarted,
    JobStatus,
    LaunchError,
    LaunchSpec,
    WakePipe,
)
from .local_resources import GPU_VISIBILITY_VARS, local_cores, local_gpus
from .orphan_guard import OrphanGuard, wait_for_dead_runs

log = logging.getLogger("snakemake.logging.matensemble.local")


@dataclass
class _LocalJob:
    key: int
    spec: LaunchSpec
    pgid: int
    #: pidfd -> (task rank, process) for the tasks still running
    alive: dict[int, tuple[int, subprocess.Popen]]
    #: when it started, epoch seconds (``time.time()``)
    started: float
    #: when its walltime ends, ``time.monotonic()`` seconds (None: no walltime)
    deadline: float | None
    returncodes: dict[int, int] = field(default_factory=dict)
    timed_out: bool = False
    #: when SIGKILL follows the SIGTERM already sent, ``time.monotonic()`` seconds
    kill_at: float | None = None
    cancelled: bool = False

    def first_failure(self) -> int:
        """The return code to report: the first failing task's, in rank order."""
        for rank in sorted(self.returncodes):
            if self.returncodes[rank] != 0:
                return self.returncodes[rank]
        return 0


@dataclass(frozen=True)
class _TaskSlice:
    rank: int
    cpus: list[int]
    gpus: list[str]


def describe_exit(returncode: int) -> tuple[str, int | None, int | None]:
    """Reason, exit code and signal number for a Popen return code."""
    if returncode < 0:
        signum = -returncode
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        return f"was killed by {name} ({signum})", None, signum
    if returncode > 128 and returncode - 128 in signal.Signals._value2member_map_:
        name = signal.Signals(returncode - 128).name
        return (
            f"exited with code {returncode} (a process of it was killed by {name})",
            returncode,
            None,
        )
    return f"exited with code {returncode}", returncode, None


class LocalBackend(Backend):
    """Runs jobs as local process groups pinned to their cores and GPUs.

    ``kill_grace_seconds``: seconds between SIGTERM and SIGKILL. Raises
    :class:`~..errors.SettingsError` for a bad ``cores``/``gpus`` setting.
    """

    name = "local"
    #: What to tell the user when a job asks for more than this machine has
    #: (:class:`~..allocation.Allocation` ``hints``).
    resource_hints = {
        "cores": "the local backend has the cores --matensemble-local-cores gives it, "
        "by default every CPU this process may run on",
        "gpus": "the local backend has the GPUs --matensemble-local-gpus gives it "
        "(e.g. --matensemble-local-gpus 2), by default those it detects",
        "nodes": "the local backend is one node; run inside a Flux allocation for more",
    }

    def __init__(
        self,
        cores: str | None = None,
        gpus: str | None = None,
        kill_grace_seconds: float = 10.0,
    ):
        self.core_ids, self._cpu_of_core = local_cores(cores)
        self.gpu_ids = local_gpus(gpus)
        self.kill_grace = kill_grace_seconds
        self._jobs: dict[int, _LocalJob] = {}
        self._deadlines: list[tuple[float, int]] = []
        self._wake = WakePipe()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake.read_fd, selectors.EVENT_READ, None)
        self._pending: list[BackendEvent] = []
        self._guard: OrphanGuard | None = None

    # -- discovery --------------------------------------------------------------
    def discover(self) -> list[NodeSpec]:
        return [
            NodeSpec(
                rank=0,
                name=socket.gethostname(),
                cores=tuple(self.core_ids),
                gpus=tuple(self.gpu_ids),
            )
        ]

    @property
    def running_count(self) -> int:
        return len(self._jobs)

    def settle_leftovers(self, resumable: Collection[str]) -> None:
        """Wait until the jobs of a killed run in this workdir are gone (its
        guard stops them: SIGTERM, SIGKILL after the grace), so that none of
        them overlaps a job of this run. Local jobs are never re-attached."""
        try:
            waited = wait_for_dead_runs(os.getcwd(), timeout=self.kill_grace + 30.0)
        except TimeoutError as error:
            raise BackendUnavailableError(
                f"matensemble: {error}; nothing of this run was started, so that no "
                "job runs twice. Fix: stop that run's job processes, then run again."
            ) from error
        if waited >= 0.05:
            log.info(f"matensemble: waited {waited:.1f} s for the jobs of a killed run to end.")

    # -- launching --------------------------------------------------------------
    def _tasks(self, spec: LaunchSpec, placement: Placement) -> list[_TaskSlice]:
        """One slice per process to start: per task, or one for the whole job."""
        cores = [core for share in placement.shares for core in share.cores]
        gpus = [gpu for share in placement.shares for gpu in share.gpus]
        request = spec.request
        if not spec.per_task or request.tasks == 1:
            return [_TaskSlice(0, self._cpus(cores), gpus)]
        cpt, gpt = request.cores_per_task, request.gpus_per_task
        return [
            _TaskSlice(
                rank,
                self._cpus(cores[rank * cpt : (rank + 1) * cpt]),
                gpus[rank * gpt : (rank + 1) * gpt],
            )
            for rank in range(request.tasks)
        ]

    def _cpus(self, cores: list[int]) -> list[int]:
        return sorted({self._cpu_of_core[core] for core in cores})

    def task_environment(self, spec: LaunchSpec, task: _TaskSlice) -> dict[str, str]:
        env = dict(spec.env)
        if self.gpu_ids:
            for var in GPU_VISIBILITY_VARS:
                env[var] = ",".join(task.gpus)
        env["MATENSEMBLE_CORES"] = format_cpu_list(task.cpus)
        env["MATENSEMBLE_GPUS"] = ",".join(task.gpus)
        if spec.per_task:
            env["MATENSEMBLE_TASK_RANK"] = str(task.rank)
            env["MATENSEMBLE_TASKS"] = str(spec.request.tasks)
        return env

    def _start(self, spec: LaunchSpec, task: _TaskSlice, logfile, pgid: int) -> subprocess.Popen:
        # The child inherits this thread's affinity at fork: no process of the
        # job ever runs on cores that were not given to it.
        os.sched_setaffinity(0, task.cpus)
        return subprocess.Popen(
            [spec.shell, "-c", spec.command],
            cwd=spec.cwd,
            env=self.task_environment(spec, task),
            stdin=subprocess.DEVNULL,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            process_group=pgid,
        )

    def launch(self, spec: LaunchSpec, placement: Placement, after: int | None = None) -> str:
        Path(spec.log_path).parent.mkdir(parents=True, exist_ok=True)
        own_affinity = os.sched_getaffinity(0)
        processes: list[tuple[int, subprocess.Popen]] = []
        try:
            with open(spec.log_path, "wb") as logfile:
                for task in self._tasks(spec, placement):
                    pgid = processes[0][1].pid if processes else 0
                    processes.append((task.rank, self._start(spec, task, logfile, pgid)))
        except OSError as error:
            if processes:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(processes[0][1].pid, signal.SIGKILL)
                for _, process in processes:
                    process.wait()
            raise LaunchError(f"could not be started: {error}") from error
        finally:
            os.sched_setaffinity(0, own_affinity)
        return self._track(spec, processes)

    def _track(self, spec: LaunchSpec, processes: list[tuple[int, subprocess.Popen]]) -> str:
        pgid = processes[0][1].pid
        if self._guard is None:
            self._guard = OrphanGuard(self.kill_grace, workdir=os.getcwd())
        self._guard.watch(pgid)
        now = time.time()
        walltime = spec.request.walltime_s
        job = _LocalJob(
            key=spec.key,
            spec=spec,
            pgid=pgid,
            alive={os.pidfd_open(p.pid): (rank, p) for rank, p in processes},
            started=now,
            deadline=time.monotonic() + walltime if walltime is not None else None,
        )
        self._jobs[spec.key] = job
        for pidfd in job.alive:
            self._selector.register(pidfd, selectors.EVENT_READ, (spec.key, pidfd))
        if job.deadline is not None:
            heapq.heappush(self._deadlines, (job.deadline, spec.key))
        self._pending.append(JobStarted(spec.key, str(pgid), now))
        return str(pgid)

    # -- waiting ----------------------------------------------------------------
    def wake(self) -> None:
        self._wake.wake()

    def wait(self, timeout: float | None) -> list[BackendEvent]:
        """Events since the last call; blocks up to ``timeout`` seconds (None:
        until something happens) when there are none."""
        events, self._pending = self._pending, []
        if events:
            timeout = 0
        timeout = self._until_next_deadline(timeout)
        for key_obj, _ in self._selector.select(timeout):
            if key_obj.data is None:
                self._wake.clear()
                continue
            finished = self._reap(*key_obj.data)
            if finished is not None:
                events.append(finished)
        self._enforce_deadlines()
        return events

    def _until_next_deadline(self, timeout: float | None) -> float | None:
        """``timeout`` (seconds) shortened to the next deadline or kill time."""
        now = time.monotonic()
        upcoming = [job.kill_at for job in self._jobs.values() if job.kill_at]
        if self._deadlines:
            upcoming.append(self._deadlines[0][0])
        if not upcoming:
            return timeout
        until = max(0.0, min(upcoming) - now)
        return until if timeout is None else min(timeout, until)

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        while self._deadlines and self._deadlines[0][0] <= now:
            _, key = heapq.heappop(self._deadlines)
            job = self._jobs.get(key)
            if job is None:
                continue
            job.timed_out = True
            log.info(
                f"matensemble: {job.spec.name} exceeded its runtime of "
                f"{_minutes(job.spec.request.walltime_s)}; stopping it."
            )
            self._signal(job, signal.SIGTERM)
            job.kill_at = now + self.kill_grace
        for job in self._jobs.values():
            if job.kill_at is not None and job.kill_at <= now:
                self._signal(job, signal.SIGKILL)
                job.kill_at = None

    def _reap(self, key: int, pidfd: int) -> JobFinished | None:
        """A task of job ``key`` ended; the job's outcome once all have."""
        job = self._jobs[key]
        rank, process = job.alive.pop(pidfd)
        self._selector.unregister(pidfd)
        os.close(pidfd)
        job.returncodes[rank] = process.wait()
        if job.alive:
            if job.returncodes[rank] != 0 and job.kill_at is None:
                # one task failed: stop its siblings, as Flux's exit-on-error does
                self._signal(job, signal.SIGTERM)
                job.kill_at = time.monotonic() + self.kill_grace
            return None
        del self._jobs[key]
        # Leftovers of the job (background processes) go with it: their cores
        # are handed to the next job now.
        self._signal(job, signal.SIGKILL)
        if self._guard is not None:
            self._guard.forget(job.pgid)
        return self._outcome(job)

    def _outcome(self, job: _LocalJob) -> JobFinished:
        returncode = job.first_failure()
        reason, exit_code, signum = describe_exit(returncode)
        if len(job.returncodes) > 1 and returncode != 0:
            failing = min(r for r, code in job.returncodes.items() if code == returncode)
            reason = f"task {failing} {reason}"
        if job.cancelled:
            status, reason = JobStatus.CANCELLED, f"was cancelled ({reason})"
        elif job.timed_out:
            status = JobStatus.TIMEOUT
            reason = (
                f"exceeded its runtime of {_minutes(job.spec.request.walltime_s)} "
                f"and was killed ({reason})"
            )
        elif returncode == 0:
            status = JobStatus.SUCCESS
        else:
            status = JobStatus.FAILED
        return JobFinished(job.key, status, reason, exit_code, signum, time.time())

    @staticmethod
    def _signal(job: _LocalJob, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(job.pgid, signum)

    # -- stopping ---------------------------------------------------------------
    def cancel_all(self) -> list[JobFinished]:
        """SIGTERM every job, SIGKILL what is left after the grace (seconds,
        on the monotonic clock); returns their outcomes once all are gone."""
        for job in self._jobs.values():
            job.cancelled = True
            self._signal(job, signal.SIGTERM)
        deadline = time.monotonic() + self.kill_grace
        finished: list[JobFinished] = []
        while self._jobs and time.monotonic() < deadline:
            finished.extend(
                e
                for e in self.wait(min(0.2, deadline - time.monotonic()))
                if isinstance(e, JobFinished)
            )
        for job in list(self._jobs.values()):
            self._signal(job, signal.SIGKILL)
        while self._jobs:
            finished.extend(e for e in self.wait(1.0) if isinstance(e, JobFinished))
        return finished

    def close(self) -> None:
        if self._jobs:
            self.cancel_all()
        self._selector.close()
        self._wake.close()
        if self._guard is not None:
            self._guard.close()


def _minutes(seconds: int | None) -> str:
    """A walltime in seconds as the user wrote it (minutes), or seconds."""
    if seconds is None:
        return "unlimited"
    minutes = seconds / 60
    return f"{minutes:g} min" if minutes >= 1 else f"{seconds} s"
