"""The cpuset list format: one parser and one formatter for the whole package."""

import os

import pytest

from snakemake_executor_plugin_matensemble.cpulist import format_cpu_list, parse_cpu_list


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("", []),
        ("5", [5]),
        ("0-3,6", [0, 1, 2, 3, 6]),
        (" 8-9 , 0 ", [0, 8, 9]),
        ("3,1,2,2", [1, 2, 3]),
        ("0,,2,", [0, 2]),
        ("4-4", [4]),
    ],
)
def test_parse(text, ids):
    assert parse_cpu_list(text) == ids


@pytest.mark.parametrize("text", ["a", "-1", "1-", "3-1", "0-3,x", "1.5", "0 1"])
def test_parse_refuses_what_is_not_a_cpu_list(text):
    with pytest.raises(ValueError, match=r"range|id"):
        parse_cpu_list(text)


@pytest.mark.parametrize(
    ("ids", "text"),
    [
        ([], ""),
        ([7], "7"),
        ([0, 1, 2, 5], "0-2,5"),
        ((5, 0, 2, 1), "0-2,5"),
        ([1, 1, 3, 4], "1,3-4"),
        ([0, 2, 4], "0,2,4"),
    ],
)
def test_format(ids, text):
    assert format_cpu_list(ids) == text


@pytest.mark.parametrize("ids", [[0], [0, 1, 2, 3, 64, 65, 127], list(range(0, 100, 3))])
def test_round_trip(ids):
    assert parse_cpu_list(format_cpu_list(ids)) == sorted(ids)


def test_linux_writes_what_parse_reads():
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("Cpus_allowed_list:"))
    assert parse_cpu_list(line.split(":", 1)[1]) == sorted(os.sched_getaffinity(0))
