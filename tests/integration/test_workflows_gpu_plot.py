"""The gpu-ensemble workflow's plot: one lane per GPU of each node, keyed by
the node (its Flux rank) and not by hostname, which can repeat across nodes
(containers, simulated nodes)."""

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).parents[2] / "workflows" / "gpu-ensemble" / "scripts"

pytestmark = pytest.mark.snakemake_independent


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"gpu_ensemble_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def record(node: str, gpu: str, start: float) -> dict:
    return {
        "host": "nid000001",  # every node of the allocation answers the same hostname
        "node": node,
        "visible": {"CUDA_VISIBLE_DEVICES": gpu},
        "gpu_ids": [gpu],
        "cpus": [0],
        "device": "cpu-fallback",
        "gflops": 1.0,
        "checksum": 0.0,
        "start": start,
        "end": start + 5.0,
    }


def test_each_node_gets_its_own_gpu_lanes_when_hostnames_repeat(tmp_path):
    # two jobs at once on GPU 0 of two different nodes, one later on rank 1 GPU 1
    records = [record("rank 0", "0", 0.0), record("rank 1", "0", 0.0), record("rank 1", "1", 6.0)]
    paths = []
    for i, data in enumerate(records):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_text(json.dumps(data))
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "summarize.py"), "--csv", "t.csv", "--plot", "t.png"]
        + [str(p) for p in paths],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader((tmp_path / "t.csv").open()))
    assert [row["node"] for row in rows] == ["rank 0", "rank 1", "rank 1"]
    summarize = load("summarize")
    loaded = [{"task": str(i), **data} for i, data in enumerate(records)]
    assert summarize.gpu_lanes(loaded) == {
        ("rank 0", "0"): 0,
        ("rank 1", "0"): 1,
        ("rank 1", "1"): 2,
    }
    assert summarize.lane_label(loaded, "rank 1", "0") == "rank 1 (nid000001) GPU 0"


def test_lanes_are_in_rank_order_and_old_records_fall_back_to_the_host():
    summarize = load("summarize")
    records = [{**record(f"rank {n}", "0", 0.0), "task": str(n)} for n in (10, 2)]
    records.append({**record("", "0", 0.0), "host": "laptop", "node": None, "task": "3"})
    assert list(summarize.gpu_lanes(records)) == [
        ("laptop", "0"),
        ("rank 2", "0"),
        ("rank 10", "0"),
    ]


@pytest.mark.parametrize(
    ("uri", "expected"),
    [("local:///tmp/flux-oIBuZR/local-3", "rank 3"), ("", None), ("ssh://host/x", None)],
)
def test_task_records_the_flux_rank_it_ran_on(monkeypatch, uri, expected):
    monkeypatch.setenv("FLUX_URI", uri)
    gpu_task = load("gpu_task")
    assert gpu_task.node_id() == (expected or gpu_task.socket.gethostname())
