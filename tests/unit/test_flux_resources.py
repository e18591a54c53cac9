"""Flux resources and resource events (pure: backends/flux/resources.py)."""

import pytest

from snakemake_executor_plugin_matensemble.backends.base import ResourceEvent
from snakemake_executor_plugin_matensemble.backends.flux import (
    expiration_from_rset,
    nodes_from_rset,
    reserve_own_cores,
    resource_event,
)
from snakemake_executor_plugin_matensemble.packing.nodes import NodeSpec


def test_resources_per_rank_from_r_lite():
    rset = {
        "execution": {
            "R_lite": [
                {"rank": "0-1", "children": {"core": "0-3", "gpu": "0-1"}},
                {"rank": "2", "children": {"core": "0-7"}},
            ],
            "nodelist": ["node[10-12]"],
        }
    }
    nodes = nodes_from_rset(rset, lambda entry: ["node10", "node11", "node12"])
    assert nodes == [
        NodeSpec(0, "node10", (0, 1, 2, 3), ("0", "1")),
        NodeSpec(1, "node11", (0, 1, 2, 3), ("0", "1")),
        NodeSpec(2, "node12", tuple(range(8)), ()),
    ]


def test_reserving_own_cores_never_takes_the_whole_rank():
    nodes = [NodeSpec(0, "a", (0, 1, 2, 3)), NodeSpec(1, "b", (0, 1))]
    assert [len(n.cores) for n in reserve_own_cores(nodes, 0, 1)] == [3, 2]
    assert [len(n.cores) for n in reserve_own_cores(nodes, 1, 5)] == [4, 1]
    assert [len(n.cores) for n in reserve_own_cores(nodes, 0, 0)] == [4, 2]


def test_expiration_of_the_instance():
    assert expiration_from_rset({"execution": {"expiration": 1795420719.0}}) == 1795420719.0
    assert expiration_from_rset({"execution": {"expiration": 0.0}}) is None
    assert expiration_from_rset({}) is None


@pytest.mark.parametrize(
    ("name", "context", "expected"),
    [
        (
            "drain",
            {"idset": "1-2", "reason": "bad dimm"},
            ResourceEvent("drain", (1, 2), "bad dimm", 5.0),
        ),
        ("undrain", {"idset": "1"}, ResourceEvent("undrain", (1,), "", 5.0)),
        ("offline", {"idset": "3"}, ResourceEvent("down", (3,), "", 5.0)),
        ("online", {"idset": "0,3"}, ResourceEvent("up", (0, 3), "", 5.0)),
        (
            "torpid",
            {"idset": "2"},
            ResourceEvent("drain", (2,), "the broker stopped answering", 5.0),
        ),
        ("lively", {"idset": "2"}, ResourceEvent("undrain", (2,), "", 5.0)),
        (
            "resource-update",
            {"expiration": 99.5},
            ResourceEvent("expiration", time=5.0, expiration=99.5),
        ),
        (
            "resource-update",
            {"expiration": 0},
            ResourceEvent("expiration", time=5.0, expiration=None),
        ),
        ("resource-update", {}, None),
        ("resource-define", {"method": "job-info"}, None),
        ("restart", {"ranks": "0-1", "online": ""}, None),
        ("drain", {"idset": ""}, None),
    ],
)
def test_resource_journal_events(name, context, expected):
    assert resource_event(name, context, 5.0) == expected
