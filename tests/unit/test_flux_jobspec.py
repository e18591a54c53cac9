"""The jobspec of a job on a placement (pure: backends/flux/jobspec.py)."""

from snakemake_executor_plugin_matensemble.backends import LaunchSpec
from snakemake_executor_plugin_matensemble.backends.flux import (
    FluxOptions,
    build_jobspec,
    job_name,
    urgency,
)

from .flux_fakes import FakeJobspec, on, spec

OPTIONS = FluxOptions(queue="batch", bank="mat", shell_options=(("verbose", "2"),))


def jobspec_of(launch, placement, options=OPTIONS, depends_on=None):
    return build_jobspec(FakeJobspec, launch, placement, options, "run-1", depends_on)


def test_single_task_job_gets_all_its_cores_and_every_attribute():
    jobspec = jobspec_of(spec(cores_per_task=4, walltime_s=600), on(2, cores=4))
    assert jobspec.kind == "command"
    assert jobspec.args == {
        "command": ["/bin/bash", "-c", "echo hi"],
        "num_tasks": 1,
        "cores_per_task": 4,
        "gpus_per_task": None,
        "num_nodes": None,
        "exclusive": False,
    }
    assert jobspec.duration == 600
    assert (jobspec.cwd, jobspec.environment) == ("/work", {"A": "1"})
    assert jobspec.stdout == "/tmp/matensemble-unit-logs/1.log"
    assert jobspec.attrs["system.job.name"] == "md[T=300]"
    assert jobspec.attrs["user.snakemake"] == {
        "run": "run-1",
        "key": 1,
        "name": "md[T=300]",
        "jobid": "7",
    }
    assert jobspec.attrs["system.constraints"] == {"ranks": ["2"]}
    assert jobspec.attrs["system.queue"] == "batch"
    assert jobspec.attrs["system.bank"] == "mat"
    assert jobspec.shell_options == {"cpu-affinity": "per-task", "verbose": 2}


def test_per_task_job_with_gpus_over_nodes():
    jobspec = jobspec_of(
        spec(per_task=True, tasks=4, cores_per_task=2, gpus_per_task=1, nodes=2), on(0, 3)
    )
    assert jobspec.kind == "command"
    assert jobspec.args["num_tasks"] == 4
    assert jobspec.args["cores_per_task"] == 2
    assert jobspec.args["gpus_per_task"] == 1
    assert jobspec.args["num_nodes"] == 2
    assert jobspec.shell_options["gpu-affinity"] == "per-task"
    assert jobspec.attrs["system.constraints"] == {"ranks": ["0,3"]}


def test_job_that_starts_its_own_ranks_gets_a_nested_instance():
    jobspec = jobspec_of(spec(tasks=2, cores_per_task=3, mpi="flux run"), on(1))
    assert jobspec.kind == "nest"
    assert jobspec.args["num_slots"] == 2
    assert jobspec.args["cores_per_slot"] == 3


def test_exclusive_job_asks_for_whole_nodes():
    jobspec = jobspec_of(spec(exclusive=True), on(1))
    assert jobspec.args["exclusive"] is True
    assert jobspec.args["num_nodes"] == 1


def test_unpinned_jobs_have_no_rank_constraint():
    assert "system.constraints" not in jobspec_of(spec(), on(0), FluxOptions(pin_ranks=False)).attrs


def test_urgency_follows_priority_unless_set():
    assert urgency(OPTIONS, spec()) == 16
    assert urgency(OPTIONS, LaunchSpec(**{**spec().__dict__, "priority": 5})) == 21
    assert urgency(OPTIONS, LaunchSpec(**{**spec().__dict__, "priority": 100})) == 31
    fixed = FluxOptions(urgency=3)
    assert urgency(fixed, LaunchSpec(**{**spec().__dict__, "priority": 5})) == 3


def test_lookahead_dependency_is_afterany_on_the_predecessor():
    jobspec = jobspec_of(spec(), on(0), depends_on=1234)
    assert jobspec.attrs["system.dependencies"] == [{"scheme": "afterany", "value": "1234"}]
    assert "system.dependencies" not in jobspec_of(spec(), on(0)).attrs


def test_pmi_setting_is_a_shell_option():
    jobspec = jobspec_of(spec(tasks=2), on(0), FluxOptions(pmi="pmi2"))
    assert jobspec.shell_options["pmi"] == "pmi2"


def test_job_names_are_short_and_printable():
    assert job_name("md[T=300, seed=1]\n") == "md[T=300,_seed=1]_"
    assert len(job_name("x" * 500)) == 80
