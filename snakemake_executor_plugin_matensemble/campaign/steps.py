"""What an allocation's batch script calls: ``start`` (queue the next allocation
after this one) and ``end`` (read the run-end record; let the next allocation
run or cancel it). ``python -m snakemake_executor_plugin_matensemble.campaign.steps``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..observing.run_end import RunEnd, read_run_end
from .schedulers import Scheduler, own_allocation
from .state import Allocation, Campaign, locked

RUN_END = "run-end.json"


@dataclass(frozen=True)
class Decision:
    """Whether the chain goes on, and why (``reason``: the run's, or
    ``max_allocations``, ``no_record``, ``snakemake_failed``)."""

    go_on: bool
    reason: str
    message: str


def decide(
    record: RunEnd | None,
    exit_status: int,
    cancel_requested: bool,
    number: int,
    max_allocations: int,
    walltime_s: float,
) -> Decision:
    """The chain's next step after allocation ``number`` ran Snakemake."""
    if cancel_requested:
        return Decision(False, "interrupted", "the campaign was cancelled (--cancel)")
    if record is None or record.reason == "running":
        return Decision(
            False,
            "no_record",
            f"Snakemake ended (exit status {exit_status}) without saying why (no run-end "
            "record); read this allocation's output",
        )
    reason = record.reason
    if reason == "complete":
        if exit_status == 0:
            return Decision(False, "complete", "the workflow is complete")
        return Decision(
            False,
            "snakemake_failed",
            f"Snakemake failed (exit status {exit_status}) after every job ran; read this "
            "allocation's output",
        )
    if reason == "job_failed":
        return Decision(
            False, reason, f"rule {record.rule} failed ({record.job}); log: {record.log}"
        )
    if reason == "no_progress":
        return Decision(False, reason, no_progress_message(record, walltime_s))
    if reason == "interrupted":
        # not by --cancel: the allocation was killed from outside (scancel, its
        # walltime, a node failure); the next allocation goes on
        return Decision(True, reason, "interrupted from outside; the next allocation goes on")
    if number >= max_allocations:
        return Decision(
            False,
            "max_allocations",
            f"{record.left if record.left is not None else 'some'} job(s) left after "
            f"{number} allocations (--max-allocations {max_allocations}); submit again to go on",
        )
    return Decision(True, reason, "the allocation ended; the next one goes on")


def no_progress_message(record: RunEnd, walltime_s: float) -> str:
    """Which job never fitted, its runtime, the walltime, and the fix."""
    runtime = record.runtime_s
    if runtime is None:
        return (
            f"no job finished in a whole allocation: {record.job} declares no runtime and "
            f"ran until the allocation's end cut it off (the walltime is {walltime_s:.0f} s); "
            "declare runtimes (resources: runtime=<minutes>) or give a longer -t"
        )
    text = (
        f"no job finished in a whole allocation: {record.job} needs a runtime of "
        f"{runtime:.0f} s, the walltime is {walltime_s:.0f} s"
    )
    if runtime >= walltime_s:
        return text + " (it never fits; give a longer -t or a shorter runtime)"
    left = f"{record.walltime_s:.0f} s" if record.walltime_s is not None else "too little"
    return (
        text + f", but Snakemake started with {left} of it left, too late for the job and "
        "the deadline margin; give a longer -t"
    )


def start(directory: Path) -> int:
    """0: this allocation runs Snakemake (the next one is queued after it);
    1: the campaign is over, this allocation does nothing."""
    with locked(directory) as campaign:
        scheduler = Scheduler(campaign.scheduler, campaign.flux_uri)
        me = own_allocation(campaign.scheduler)
        entry = campaign.find(me) or campaign.add(me)
        if campaign.status != "active":
            entry.state, entry.reason = "ended", f"campaign {campaign.status}"
            entry.started = entry.ended = time.time()
            print(f"matensemble: campaign {campaign.id} is {campaign.status}; nothing to do.")
            return 1
        entry.state, entry.started = "running", time.time()
        killed = _killed_without_progress(campaign, entry, read_run_end(directory / RUN_END))
        if killed is not None:
            entry.state, entry.ended, entry.reason = "ended", entry.started, "no_progress"
            stop(campaign, scheduler, "no_progress", killed)
            print(f"matensemble: campaign {campaign.id} stops: {killed}.")
            return 1
        (directory / RUN_END).unlink(missing_ok=True)
        if len(campaign.started()) < campaign.max_allocations and not campaign.waiting():
            campaign.add(scheduler.submit(campaign.script, after=me))
        _unlock_snakemake(campaign)
    print(f"matensemble: campaign {campaign.id}, allocation {entry.number} ({me}).")
    return 0


#: an allocation killed after this share of its walltime ran it all (its end is
#: the kill at the walltime, give or take the scheduler's grace)
WHOLE_WALLTIME = 0.9


def _killed_without_progress(
    campaign: Campaign, entry: Allocation, record: RunEnd | None
) -> str | None:
    """Why the chain stops where the previous allocation was killed before it
    could act (it never ended in the state) after running its whole walltime
    without finishing a job (a job longer than the walltime, with no runtime
    declared: the walltime cut it off each time); None where it goes on (killed
    early: scancel, a node failure). The killed allocation is marked ended."""
    before = [a for a in campaign.started() if a is not entry]
    if not before or before[-1].state != "running":
        return None
    previous = before[-1]
    ended = record.ended if record is not None and record.ended else entry.started
    previous.state, previous.ended, previous.reason = "ended", ended, "killed"
    if record is not None:
        previous.done, previous.left, previous.journal = record.done, record.left, record.journal
    ran = ended - (previous.started or ended)
    if record is None or record.done > 0 or ran < WHOLE_WALLTIME * campaign.walltime_s:
        return None
    return (
        f"no job finished in a whole allocation: allocation {previous.number} "
        f"({previous.id}) ran its whole walltime of {campaign.walltime_s:.0f} s and was "
        "killed; a job longer than the walltime was cut off (declare runtimes: resources: "
        "runtime=<minutes>, or give a longer -t)"
    )


def _unlock_snakemake(campaign: Campaign) -> None:
    """Snakemake's locks left by an allocation killed mid-run (what ``snakemake
    --unlock`` removes): the allocations of a campaign run one after another."""
    locks = Path(campaign.snakemake_dir or campaign.workdir) / ".snakemake" / "locks"
    if locks.is_dir():
        shutil.rmtree(locks, ignore_errors=True)


def end(directory: Path, exit_status: int) -> int:
    """Read the run-end record; let the next allocation run or cancel it."""
    record = read_run_end(directory / RUN_END)
    with locked(directory) as campaign:
        scheduler = Scheduler(campaign.scheduler, campaign.flux_uri)
        me = own_allocation(campaign.scheduler)
        entry = campaign.find(me) or campaign.add(me)
        number = len(campaign.started())
        decision = decide(
            record,
            exit_status,
            campaign.status == "cancelled",
            number,
            campaign.max_allocations,
            campaign.walltime_s,
        )
        entry.state, entry.ended, entry.reason = "ended", time.time(), decision.reason
        if record is not None:
            entry.done, entry.left, entry.journal = record.done, record.left, record.journal
        if not decision.go_on:
            stop(campaign, scheduler, decision.reason, decision.message)
    verb = "goes on" if decision.go_on else "stops"
    print(f"matensemble: campaign {campaign.id} {verb}: {decision.message}.")
    return 0


def stop(campaign: Campaign, scheduler: Scheduler, reason: str, message: str) -> None:
    """End the campaign (under its lock): cancel every queued allocation."""
    waiting = campaign.waiting()
    scheduler.cancel([a.id for a in waiting])
    for allocation in waiting:
        allocation.state, allocation.reason = "cancelled", "the campaign ended"
    if campaign.status == "active":
        campaign.status = "complete" if reason == "complete" else "stopped"
    campaign.reason = campaign.reason or reason
    campaign.message = campaign.message or message


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="matensemble-campaign-step")
    parser.add_argument("step", choices=("start", "end"))
    parser.add_argument("directory", type=Path)
    parser.add_argument("--exit-status", type=int, default=0)
    args = parser.parse_args(argv)
    if args.step == "start":
        return start(args.directory)
    return end(args.directory, args.exit_status)


if __name__ == "__main__":
    sys.exit(main())
