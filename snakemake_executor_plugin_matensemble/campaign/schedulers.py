"""The system scheduler a campaign's allocations go to: Slurm (``sbatch``) or
Flux (``flux batch``, where Flux is the system scheduler or inside a long
``flux alloc``). Each submits the batch script (after another allocation when
given one), cancels, tells states, and says which allocation a script runs in."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from .recipes import CampaignError

#: states of an allocation that has not started yet
QUEUED_STATES = frozenset({"PENDING", "CONFIGURING", "DEPEND", "PRIORITY", "SCHED", "NEW"})


def _run(argv: Sequence[str], env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        list(argv), capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


@dataclass
class Scheduler:
    """The commands of one scheduler (``name``: ``slurm`` or ``flux``)."""

    name: str
    #: Flux: the instance the allocations go to (``FLUX_URI`` at submission)
    uri: str | None = None

    # -- the batch script's header ------------------------------------------------------
    def header(self, options: Sequence[str], job_name: str, output: str) -> list[str]:
        if self.name == "slurm":
            lines = [f"#SBATCH {option}" for option in _pairs(options)]
            return [*lines, f"#SBATCH -J {job_name}", f"#SBATCH -o {output}"]
        lines = [f"#flux: {option}" for option in _pairs(options)]
        return [*lines, f"#flux: --job-name={job_name}", f"#flux: --output={output}"]

    # -- commands --------------------------------------------------------------------
    def submit(self, script: str, after: str | None = None) -> str:
        """Submit ``script``; ``after``: start only once that allocation ended
        (however it ended). The allocation's id."""
        if self.name == "slurm":
            dependency = [f"--dependency=afterany:{after}"] if after else []
            out = _run(["sbatch", "--parsable", *dependency, script])
            return out.strip().split(";")[0]
        dependency = [f"--dependency=afterany:{after}"] if after else []
        return flux_decimal(_run(["flux", "batch", *dependency, script], self._env()).strip())

    def cancel(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        if self.name == "slurm":
            _run(["scancel", *ids])
        else:
            _run(["flux", "cancel", *ids], self._env())

    def interrupt(self, allocation: str) -> None:
        """End a running allocation's Snakemake cleanly: SIGTERM to the
        allocation's processes (Snakemake ends as ``interrupted``)."""
        if self.name == "slurm":
            _run(["scancel", "--signal=TERM", allocation])
        else:
            _run(["flux", "job", "kill", "--signal=SIGTERM", allocation], self._env())

    def states(self, ids: Sequence[str]) -> dict[str, str]:
        """id -> the scheduler's state (``PENDING``, ``RUNNING``, ...; ids the
        scheduler no longer knows are left out)."""
        if not ids:
            return {}
        if self.name == "slurm":
            done = subprocess.run(
                ["squeue", "-h", "-t", "all", "-o", "%i %T", "-j", ",".join(ids)],
                capture_output=True,
                text=True,
            )
            return dict(line.split() for line in done.stdout.splitlines() if len(line.split()) == 2)
        states = {}
        for job in ids:
            done = subprocess.run(
                ["flux", "jobs", "-n", "-o", "{state}", job],
                capture_output=True,
                text=True,
                env={**os.environ, **self._env()},
            )
            if done.returncode == 0 and done.stdout.strip():
                states[job] = done.stdout.strip()
        return states

    def _env(self) -> dict[str, str]:
        return {"FLUX_URI": self.uri} if self.uri else {}


def _pairs(options: Sequence[str]) -> list[str]:
    """``['-N', '8', '--exclusive']`` -> ``['-N 8', '--exclusive']``."""
    lines: list[str] = []
    for option in options:
        if option.startswith("-") or not lines:
            lines.append(option)
        else:
            lines[-1] += f" {option}"
    return lines


def detect(choice: str = "auto") -> Scheduler:
    """The scheduler to submit to: ``slurm``, ``flux``, or ``auto`` (inside a
    Flux instance: Flux; else Slurm where ``sbatch`` is on PATH). CampaignError
    naming the fix when its client is not on PATH."""
    if choice == "auto":
        if os.environ.get("FLUX_URI") and shutil.which("flux"):
            choice = "flux"
        elif shutil.which("sbatch"):
            choice = "slurm"
        else:
            raise CampaignError(
                "no scheduler on PATH: neither sbatch (Slurm) nor flux inside a Flux "
                "instance (FLUX_URI unset); run matensemble-submit where you submit "
                "batch jobs (a login node), or load the scheduler's module"
            )
    client = {"slurm": "sbatch", "flux": "flux"}.get(choice)
    if client is None:
        raise CampaignError(f"--scheduler {choice}: choose slurm, flux or auto")
    if shutil.which(client) is None:
        raise CampaignError(
            f"--scheduler {choice}: {client} is not on PATH; run matensemble-submit where "
            f"{client} works (a login node), or load the scheduler's module"
        )
    if choice == "flux":
        uri = os.environ.get("FLUX_URI")
        if not uri:
            raise CampaignError(
                "--scheduler flux: not inside a Flux instance (FLUX_URI unset); run "
                "matensemble-submit inside the Flux instance that runs the allocations "
                "(the system instance, or a long flux alloc)"
            )
        return Scheduler("flux", uri)
    return Scheduler("slurm")


def own_allocation(scheduler: str) -> str:
    """The id of the allocation this process runs in (inside a batch script)."""
    if scheduler == "slurm":
        job = os.environ.get("SLURM_JOB_ID")
        if not job:
            raise RuntimeError("SLURM_JOB_ID is not set: not inside a Slurm allocation")
        return job
    return flux_decimal(_run(["flux", "getattr", "jobid"]).strip())


def flux_decimal(job: str, env: dict[str, str] | None = None) -> str:
    """A Flux job id in decimal (``flux batch`` answers f58, ``getattr jobid``
    may not): one spelling in the campaign's state."""
    return _run(["flux", "job", "id", "--to=dec", job], env).strip()


def walltime_seconds(text: str, scheduler: str) -> float:
    """A walltime as seconds: Slurm's ``[D-]HH:MM:SS``, ``MM:SS``, ``MM``;
    Flux's FSD (``90s``, ``30m``, ``2h``, ``1d``; a bare number is minutes in
    both). CampaignError naming the field when it is none of these."""
    text = text.strip()
    fsd = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text)
    if fsd and (scheduler == "flux" or not fsd.group(2)):
        return float(fsd.group(1)) * {"s": 1, "m": 60, "": 60, "h": 3600, "d": 86400}[fsd.group(2)]
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if match and scheduler == "slurm":
        days, a, b, c = match.groups()
        parts = [int(x) for x in (a, b, c) if x is not None]
        if days is not None:
            hours, minutes, seconds = ([*parts, 0, 0])[:3]
            return int(days) * 86400 + hours * 3600 + minutes * 60 + seconds
        if len(parts) == 3:
            return parts[0] * 3600 + parts[1] * 60 + parts[2]
        return parts[0] * 60 + parts[1]
    raise CampaignError(
        f"-t {text}: not a walltime; give Slurm's HH:MM:SS (2:00:00) or minutes (120)"
        if scheduler == "slurm"
        else f"-t {text}: not a walltime; give Flux's 2h, 90m or 45s"
    )
