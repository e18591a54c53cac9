"""Snakemake resources -> ResourceRequest, and the errors for bad values."""

import pytest

from snakemake_executor_plugin_matensemble.errors import InvalidRequestError
from snakemake_executor_plugin_matensemble.intake.request import (
    request_from_resources,
    unread_resources,
)
from snakemake_executor_plugin_matensemble.packing.resource_request import ResourceRequest


def make(threads=1, **resources) -> ResourceRequest:
    return request_from_resources("rule 'md' (jobid 1)", "md", threads, resources)


def test_defaults_are_one_core_one_task_no_gpu():
    request = make()
    assert request == ResourceRequest()
    assert request.total_cores == 1
    assert request.total_gpus == 0
    assert request.walltime_s is None


def test_threads_are_cores_per_task_and_tasks_multiply():
    request = make(threads=4, tasks=3)
    assert (request.tasks, request.cores_per_task, request.total_cores) == (3, 4, 12)


def test_cpus_per_task_overrides_default_threads():
    request = make(threads=1, cpus_per_task=8)
    assert request.cores_per_task == 8
    assert request.cores_field == "cpus_per_task"


def test_cpus_per_task_equal_to_threads_is_fine():
    assert make(threads=4, cpus_per_task=4).cores_per_task == 4


def test_gpu_is_the_total_split_over_tasks():
    request = make(tasks=4, gpu=8)
    assert (request.gpus_per_task, request.total_gpus) == (2, 8)


def test_gpus_per_task():
    request = make(tasks=2, gpus_per_task=1)
    assert (request.gpus_per_task, request.total_gpus, request.gpus_field) == (
        1,
        2,
        "gpus_per_task",
    )


@pytest.mark.parametrize(
    ("runtime", "seconds"),
    [(1, 60), (90, 5400), (0.5, 30), ("45", 2700), ("2h", 7200), ("1.5h", 5400), ("90m", 5400)],
)
def test_runtime_minutes_become_walltime_seconds(runtime, seconds):
    assert make(runtime=runtime).walltime_s == seconds


def test_nodes_mpi_and_exclusive():
    request = make(tasks=4, nodes=2, mpi="mpiexec", exclusive="true")
    assert request.nodes == 2
    assert request.mpi == "mpiexec"
    assert request.exclusive is True


def test_threads_zero_is_accepted_and_placed_on_one_core():
    # Snakemake's local executor runs threads: 0 with {threads} = 0; the
    # process still needs a core to run on
    assert make(threads=0).cores_per_task == 1
    assert make(threads=0, cpus_per_task=3).cores_per_task == 3


def test_numeric_strings_from_profiles_are_accepted():
    assert make(threads="2", tasks="3").total_cores == 6


@pytest.mark.parametrize(
    ("threads", "resources", "field", "words"),
    [
        (-1, {}, "threads", "at least 0"),
        (1.5, {}, "threads", "whole number"),
        ("four", {}, "threads", "whole number"),
        (1, {"tasks": 0}, "tasks", "at least 1"),
        (1, {"tasks": 2.5}, "tasks", "whole number"),
        (1, {"tasks": True}, "tasks", "whole number"),
        (1, {"nodes": -2}, "nodes", "at least 1"),
        (1, {"nodes": 3, "tasks": 2}, "nodes", "more than tasks"),
        (1, {"gpu": -1}, "gpu", "at least 0"),
        (1, {"gpu": 3, "tasks": 2}, "gpu", "split evenly"),
        (1, {"gpu": 4, "gpus_per_task": 1, "tasks": 2}, "gpu", "conflicts"),
        (1, {"gpus_per_task": "x"}, "gpus_per_task", "whole number"),
        (1, {"runtime": -5}, "runtime", "positive"),
        (1, {"runtime": 0}, "runtime", "positive"),
        (1, {"runtime": "soon"}, "runtime", "not a duration"),
        (1, {"mpi": ""}, "mpi", "MPI launcher"),
        (1, {"exclusive": "maybe"}, "exclusive", "true or false"),
        (4, {"cpus_per_task": 2}, "cpus_per_task", "conflicts with threads=4"),
        (1, {"cpus_per_task": 0}, "cpus_per_task", "at least 1"),
    ],
)
def test_bad_values_name_rule_field_value_and_fix(threads, resources, field, words):
    with pytest.raises(InvalidRequestError) as caught:
        make(threads=threads, **resources)
    error = caught.value
    message = str(error)
    assert error.field == field
    assert message.startswith("rule 'md' (jobid 1): resource ")
    assert f"{field}=" in message
    assert words in message
    assert "Fix:" in message
    assert "md" in error.fix


def test_unread_resources_are_reported():
    unenforced, confusable = unread_resources({"mem_mb": 1000, "gpus": 2, "runtime": 3})
    assert unenforced == ["mem_mb"]
    assert confusable == ["gpus"]


def test_shape_ignores_walltime_but_not_placement_fields():
    assert make(runtime=1).shape == make(runtime=99).shape
    assert make(threads=2).shape != make(threads=1).shape
