"""Child instances without Flux: node groups, walltime inside the allocation,
the environment children and relays get, URIs, loss reasons, the carrier's
byte decoding and its hand-over of ordinary hosts to ssh."""

from __future__ import annotations

import base64
import os
import subprocess
import sys

import pytest

from snakemake_executor_plugin_matensemble.backends.flux.children import carrier, relay
from snakemake_executor_plugin_matensemble.backends.flux.children.child import first_rank
from snakemake_executor_plugin_matensemble.backends.flux.children.groups import idset, split_ranks
from snakemake_executor_plugin_matensemble.backends.flux.children.launch import (
    END_MARGIN_S,
    FLUXION_MODULES,
    ChildPlan,
    child_environment,
    choose_scheduler,
    expiration_of,
    remaining_seconds,
)
from snakemake_executor_plugin_matensemble.backends.flux.children.watch import loss_reason


def test_ranks_split_into_consecutive_groups_differing_by_at_most_one() -> None:
    assert split_ranks(range(4), 2) == [(0, 1), (2, 3)]
    assert split_ranks([0, 1, 2, 3, 4, 5, 6], 3) == [(0, 1, 2), (3, 4), (5, 6)]
    assert split_ranks([5, 1, 3], 3) == [(1,), (3,), (5,)]


@pytest.mark.parametrize(
    ("ranks", "groups", "message"),
    [([0, 1], 3, "need at least 3 nodes"), ([0, 1], 0, ">= 1"), ([0, 0, 1], 1, "distinct")],
)
def test_impossible_splits_say_why(ranks: list[int], groups: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        split_ranks(ranks, groups)


def test_idset_is_flux_form() -> None:
    assert idset([3, 0, 1, 2, 7, 9, 10]) == "0-3,7,9-10"
    assert idset([4]) == "4"


def test_a_child_ends_a_margin_before_the_allocation() -> None:
    assert remaining_seconds(1000.0 + 600, now=1000.0) == 600 - END_MARGIN_S
    assert remaining_seconds(0.0, now=1000.0) == 0.0  # unlimited enclosing instance
    with pytest.raises(ValueError, match="too little"):
        remaining_seconds(1000.0 + END_MARGIN_S, now=1000.0)


def test_children_get_the_chosen_scheduler_and_no_parent_uri() -> None:
    parent = {"FLUX_URI": "local:///p", "FLUX_SSH": "/c", "PATH": "/bin", "HOME": "/h"}
    simple = child_environment("simple", parent)
    assert simple == {"PATH": "/bin", "HOME": "/h", "FLUX_MODPROBE_DISABLE": FLUXION_MODULES}
    assert "FLUX_MODPROBE_DISABLE" not in child_environment("fluxion", parent)
    with pytest.raises(ValueError, match="scheduler"):
        ChildPlan("c0", (0,), "fifo")  # type: ignore[arg-type]


def test_relay_environment_drops_what_would_recurse() -> None:
    env = carrier.relay_environment({"FLUX_URI": "ssh://x/y", "FLUX_SSH": "/c", "A": "1"})
    assert env == {"A": "1"}


def test_child_uri_names_the_enclosing_rank_and_round_trips() -> None:
    uri = relay.child_uri(7, "/tmp/flux-abc/local-0")
    assert uri == "ssh://matensemble-rank-7/tmp/flux-abc/local-0"
    assert carrier.host_rank("matensemble-rank-7") == 7
    assert carrier.host_rank("user@matensemble-rank-12") == 12
    assert carrier.host_rank("frontier00001") is None
    assert relay.local_path_of("local:///tmp/flux-abc/local-0") == "/tmp/flux-abc/local-0"
    with pytest.raises(ValueError, match="absolute"):
        relay.child_uri(1, "relative/path")


def test_io_objects_decode_to_exact_bytes() -> None:
    raw = b"\x00\xff\x01binary"
    encoded = {"data": base64.b64encode(raw).decode(), "encoding": "base64"}
    assert carrier.decode_io(encoded) == raw
    assert carrier.decode_io({"data": "a\x00b"}) == b"a\x00b"
    assert carrier.decode_io({"eof": True}) == b""


def test_first_rank_of_a_job_r() -> None:
    rset = {"execution": {"R_lite": [{"rank": "6-7"}, {"rank": "2,4-5"}]}}
    assert first_rank(rset) == 2


def test_loss_reasons() -> None:
    assert loss_reason("exception", {"severity": 0, "type": "exec", "note": "x"}) == (
        "exception exec: x"
    )
    assert loss_reason("exception", {"severity": 1, "type": "warn"}) is None
    assert loss_reason("finish", {"status": 9}) == "its brokers ended by signal 9"
    assert loss_reason("finish", {"status": 137 << 8}) == "its brokers exited with status 137"
    assert loss_reason("start", {}) is None


def test_ordinary_hosts_go_to_the_replaced_ssh_command(tmp_path) -> None:
    script = relay.write_carrier_script(tmp_path, "local:///nowhere", fallback="echo SSH")
    out = subprocess.run(
        [str(script), "-p", "2222", "frontier00001", "flux relay /tmp/x"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["SSH", "-p", "2222", "frontier00001", "flux", "relay", "/tmp/x"]
    assert sys.executable in script.read_text()


def test_sched_simple_unless_the_nodes_have_gpus() -> None:
    cpu_only = {"execution": {"R_lite": [{"rank": "0-3", "children": {"core": "0-55"}}]}}
    gpus = {"execution": {"R_lite": [{"rank": "0-3", "children": {"core": "0-55", "gpu": "0-7"}}]}}
    assert choose_scheduler(cpu_only) == "simple"
    assert choose_scheduler(gpus) == "fluxion"
    assert expiration_of({"execution": {"expiration": 1234.0}}) == 1234.0
    assert expiration_of({"execution": {}}) == 0.0


def test_a_second_carrier_falls_back_to_the_original_ssh(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FLUX_SSH", "/usr/bin/my-ssh")
    monkeypatch.setenv(relay.ORIGINAL_FLUX_SSH, "unset below, restored after the test")
    monkeypatch.delenv(relay.ORIGINAL_FLUX_SSH)
    first = relay.write_carrier_script(tmp_path / "a", "local:///p")
    relay.install_carrier(first)
    second = relay.write_carrier_script(tmp_path / "b", "local:///p")
    relay.install_carrier(second)
    assert "--fallback /usr/bin/my-ssh" in second.read_text()
    assert str(first) not in second.read_text()


@pytest.mark.parametrize("before", ["", "/usr/bin/my-ssh"])
def test_jobs_get_the_flux_ssh_of_before_the_carrier(tmp_path, monkeypatch, before) -> None:
    monkeypatch.setenv(relay.ORIGINAL_FLUX_SSH, "unset below, restored after the test")
    monkeypatch.delenv(relay.ORIGINAL_FLUX_SSH)
    monkeypatch.setenv("FLUX_SSH", before or "unset below, restored after the test")
    if not before:
        monkeypatch.delenv("FLUX_SSH")
    relay.install_carrier(relay.write_carrier_script(tmp_path, "local:///p"))
    job = relay.job_environment(dict(os.environ))
    assert relay.ORIGINAL_FLUX_SSH not in job
    assert job.get("FLUX_SSH", "") == before
    assert "--fallback " + (before or "ssh") in (tmp_path / "flux-ssh-carrier").read_text()
