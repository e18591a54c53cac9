"""matensemble-submit without a cluster: bad input refused before anything is
submitted, the script written from the profile's recipe, the chain's decisions."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from snakemake_executor_plugin_matensemble.campaign import cli
from snakemake_executor_plugin_matensemble.campaign.recipes import read_profile
from snakemake_executor_plugin_matensemble.campaign.schedulers import walltime_seconds
from snakemake_executor_plugin_matensemble.campaign.state import Allocation, Campaign
from snakemake_executor_plugin_matensemble.campaign.steps import decide
from snakemake_executor_plugin_matensemble.observing.run_end import RunEnd

ROOT = Path(__file__).parents[2]
PROFILES = ROOT / "workflows" / "profiles"


@pytest.fixture
def fake_sbatch(tmp_path, monkeypatch):
    """A PATH whose only scheduler is an ``sbatch`` that records each call
    (and answers a job id), with no Flux instance around."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    calls = tmp_path / "sbatch-calls"
    sbatch = bindir / "sbatch"
    sbatch.write_text(f'#!/bin/sh\necho "$@" >> {calls}\necho 42\n')
    sbatch.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}/usr/bin{os.pathsep}/bin")
    monkeypatch.delenv("FLUX_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    return calls


def submit(*argv: str) -> int:
    return cli.main(list(argv))


def nothing_submitted(calls: Path, workdir: Path) -> None:
    assert not calls.exists(), calls.read_text()
    assert not (workdir / ".snakemake").exists()


def test_an_unknown_profile_is_refused_naming_the_field(fake_sbatch, tmp_path, capsys):
    assert submit("--profile", "workflows/profiles/nowhere", "-N", "2", "-t", "1:00:00") == 2
    error = capsys.readouterr().err
    assert "--profile workflows/profiles/nowhere: no such profile" in error
    assert "workflows/profiles/frontier" in error
    nothing_submitted(fake_sbatch, tmp_path)


def test_a_walltime_within_the_deadline_margin_is_refused(fake_sbatch, tmp_path, capsys):
    profile = str(PROFILES / "flux-allocation")
    assert submit("--profile", profile, "-N", "1", "-t", "0:00:20") == 2
    error = capsys.readouterr().err
    assert "-t 0:00:20: the walltime (20 s) is not longer than the deadline margin (30 s" in error
    assert "--matensemble-deadline-margin" in error
    # the user's own margin counts
    argv = ("--profile", profile, "-N", "1", "-t", "0:02:00", "--")
    assert submit(*argv, "--matensemble-deadline-margin", "150") == 2
    assert "(120 s) is not longer than the deadline margin (150 s" in capsys.readouterr().err
    nothing_submitted(fake_sbatch, tmp_path)


def test_no_scheduler_on_path_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("FLUX_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert submit("--profile", str(PROFILES / "frontier"), "-N", "8", "-t", "2:00:00") == 2
    assert "no scheduler on PATH: neither sbatch (Slurm) nor flux" in capsys.readouterr().err
    assert not (tmp_path / ".snakemake").exists()


def test_a_recipe_placeholder_must_be_given(fake_sbatch, tmp_path, capsys):
    assert submit("--profile", str(PROFILES / "frontier"), "-N", "8", "-t", "2:00:00") == 2
    assert "the frontier recipe needs -A <project>" in capsys.readouterr().err
    nothing_submitted(fake_sbatch, tmp_path)


def test_the_script_comes_from_the_profiles_recipe_and_is_submitted(fake_sbatch, tmp_path):
    profile = str(PROFILES / "perlmutter")
    argv = ("--profile", profile, "-N", "8", "-t", "2:00:00", "-A", "m1234_g")
    assert submit(*argv, "--", "-s", "Snakefile", "--keep-going") == 0
    (directory,) = (tmp_path / ".snakemake" / "matensemble" / "campaign").iterdir()
    script = (directory / "allocation.sh").read_text()
    # the recipe's own options are kept (-C gpu -q regular), the user's replace its
    assert "#SBATCH -A m1234_g\n" in script
    assert "#SBATCH -C gpu\n#SBATCH -q regular\n" in script
    assert "#SBATCH -N 8\n#SBATCH -t 2:00:00\n" in script
    assert "export MATENSEMBLE_JOB_END=$(date -d" in script
    assert (
        "srun --mpi=pmi2 -N $SLURM_NNODES --ntasks-per-node=1 -c 128 --gpus-per-node=4 "
        "apptainer exec --nv matensemble-perlmutter.sif matensemble-flux-start snakemake "
        f"--profile {PROFILES / 'perlmutter'} -s Snakefile --keep-going --rerun-incomplete\n"
    ) in script
    assert fake_sbatch.read_text().split() == ["--parsable", str(directory / "allocation.sh")]
    state = json.loads((directory / "state.json").read_text())
    assert [a["id"] for a in state["allocations"]] == ["42"]


def test_every_profile_recipe_is_one_a_campaign_can_use():
    for profile in PROFILES.iterdir():
        for recipe in read_profile(profile).values():
            lines = recipe.launch_lines("snakemake X")
            assert lines[-1].endswith("snakemake X"), (profile, recipe)


@pytest.mark.parametrize(
    ("text", "scheduler", "seconds"),
    [
        ("2:00:00", "slurm", 7200),
        ("2", "slurm", 120),
        ("1-00:00:00", "slurm", 86400),
        ("30:00", "slurm", 1800),
        ("2h", "flux", 7200),
        ("90s", "flux", 90),
        ("5", "flux", 300),
    ],
)
def test_walltimes(text, scheduler, seconds):
    assert walltime_seconds(text, scheduler) == seconds


def record(reason: str, **fields) -> RunEnd:
    return RunEnd(run="r", reason=reason, **fields)


@pytest.mark.parametrize(
    ("run_end", "status", "cancelled", "number", "go_on", "reason"),
    [
        (record("allocation_ended", left=3), 1, False, 1, True, "allocation_ended"),
        (record("allocation_ended", left=3), 1, False, 5, False, "max_allocations"),
        (record("complete"), 0, False, 2, False, "complete"),
        (record("complete"), 1, False, 2, False, "snakemake_failed"),
        (record("job_failed", rule="bad", job="bad", log="l"), 1, False, 1, False, "job_failed"),
        (record("no_progress", job="long", runtime_s=300.0), 1, False, 1, False, "no_progress"),
        (record("interrupted"), 1, True, 1, False, "interrupted"),
        (record("interrupted"), 1, False, 1, True, "interrupted"),
        (None, 1, False, 1, False, "no_record"),
        (record("running"), 137, False, 1, False, "no_record"),
    ],
)
def test_the_chain_goes_on_only_when_it_should(run_end, status, cancelled, number, go_on, reason):
    decision = decide(run_end, status, cancelled, number, 5, 120.0)
    assert (decision.go_on, decision.reason) == (go_on, reason)


def test_a_failure_and_no_progress_are_named():
    failed = decide(
        record("job_failed", rule="bad", job="bad[i=1]", log="logs/b.log"), 1, False, 1, 5, 60
    )
    assert failed.message == "rule bad failed (bad[i=1]); log: logs/b.log"
    stuck = decide(record("no_progress", job="long", runtime_s=300.0), 1, False, 1, 5, 120.0)
    assert "long needs a runtime of 300 s, the walltime is 120 s (it never fits" in stuck.message
    cut = decide(record("no_progress", job="long"), 1, False, 1, 5, 120.0)
    assert "long declares no runtime and ran until the allocation's end cut it off" in cut.message
    late = record("no_progress", job="md", runtime_s=60.0, walltime_s=55.0)
    assert decide(late, 1, False, 1, 5, 120.0).message == (
        "no job finished in a whole allocation: md needs a runtime of 60 s, the walltime is "
        "120 s, but Snakemake started with 55 s of it left, too late for the job and the "
        "deadline margin; give a longer -t"
    )


def test_status_counts_allocations_jobs_and_node_hours():
    campaign = Campaign("c", "slurm", "s.sh", "/w", nodes=4, walltime_s=3600, max_allocations=5)
    campaign.allocations = [
        Allocation(
            "1", 1, "ended", started=0.0, ended=1800.0, reason="allocation_ended", done=5, left=3
        ),
        Allocation("2", 2, "running", started=1900.0),
        Allocation("3", 3, "queued"),
    ]
    text = "\n".join(cli.status_lines(campaign, {"2": "RUNNING", "3": "PENDING"}, now=3700.0))
    assert "allocations: 2 used, 1 queued (at most 5); 4.00 node-hours" in text
    assert "jobs: 5 done, 3 left; last reason: allocation_ended" in text
    assert "2. slurm job 2: RUNNING, ran 30.0 min" in text
    assert "3. slurm job 3: PENDING" in text


@pytest.mark.parametrize(
    ("ran_s", "done", "stops"),
    [(118.0, 0, True), (20.0, 0, False), (118.0, 1, False)],
    ids=["whole-walltime-no-job", "killed-early", "some-progress"],
)
def test_an_allocation_killed_at_its_walltime_without_progress_stops_the_chain(ran_s, done, stops):
    from snakemake_executor_plugin_matensemble.campaign.steps import _killed_without_progress

    campaign = Campaign("c", "slurm", "s.sh", "/w", nodes=1, walltime_s=120, max_allocations=5)
    killed = campaign.add("7")
    killed.state, killed.started = "running", 1000.0  # its script never got to act
    me = campaign.add("8")
    me.state, me.started = "running", 1200.0
    run_end = record("interrupted", done=done, ended=1000.0 + ran_s)
    why = _killed_without_progress(campaign, me, run_end)
    assert (why is not None) == stops, why
    assert (killed.state, killed.ended, killed.reason) == ("ended", 1000.0 + ran_s, "killed")
    if stops:
        assert "allocation 1 (7) ran its whole walltime of 120 s" in why
