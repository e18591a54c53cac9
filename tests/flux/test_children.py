"""Child Flux instances on real brokers: started over node groups, reached
through the enclosing instance (never ssh, never the child's local socket),
lost as a whole when a broker dies, and re-attached after the relay dies.

Each test runs a small Python scenario inside a test instance of 4 brokers
(children of 2 ranks each); the scenario prints one JSON line of facts and the
test asserts on them.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from .fluxenv import requires_flux, run_in_flux

pytestmark = [requires_flux, pytest.mark.flux, pytest.mark.snakemake_independent]

PRELUDE = """
import json, os, signal, sys, time
import flux, flux.job
from snakemake_executor_plugin_matensemble.backends.flux.children.childset import start_children

def jobspec(command, out, nodes=1):
    js = flux.job.JobspecV1.from_command(["sh", "-c", command], num_nodes=nodes, num_tasks=nodes)
    js.cwd = os.getcwd()
    js.stdout = out
    js.environment = {k: v for k, v in os.environ.items() if k != "FLUX_URI"}
    return js

def wait_for(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False

def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True

def carriers():
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if ppid == os.getpid() and b"carrier.py" in cmdline:
            found.append(int(entry))
    return found

parent = flux.Flux()
children = start_children(parent, 2)
"""

# Through each child's relay URI, a job runs on the child's own nodes (its
# broker's parent is an enclosing broker of the child's group) and its output,
# NUL bytes included, comes back; each child ends inside the enclosing allocation.
THROUGH_RELAY = """
facts = {"children": []}
import flux.kvs
rset = flux.kvs.get(parent, "resource.R")
rset = json.loads(rset) if isinstance(rset, str) else rset
facts["enclosing_expiration"] = rset["execution"]["expiration"]
for child in children.children:
    out = f"out-{child.name}.txt"
    command = "printf 'a\\\\000b %s ' $(flux getattr rank); flux getattr parent-uri"
    with flux.job.FluxExecutor(handle_kwargs=child.handle_kwargs) as executor:
        future = executor.submit(jobspec(command, out, nodes=2))
        status = future.result(timeout=60)
    child_rset = flux.job.job_kvs_lookup(parent, child.jobid, keys=["R"])["R"]
    with open(out, "rb") as f:
        output = f.read().decode("latin-1")
    facts["children"].append({
        "name": child.name, "ranks": list(child.ranks), "uri": child.uri, "status": status,
        "local_ranks": [child.local_rank(rank) for rank in child.ranks],
        "output": output, "expiration": child_rset["execution"]["expiration"],
    })
facts["still_active"] = children.close(parent)
facts["states"] = [flux.job.get_job(parent, c.jobid)["state"] for c in children.children]
print("FACTS " + json.dumps(facts))
"""

# A broker of child c1 is killed while a job runs on each of its nodes: both end, the
# enclosing instance sees the child job end, the loss is reported once and for
# c1 only, and c0 still runs jobs.
BROKER_KILLED = """
lost = []
children.watch(lost.append)
c0, c1 = children.children
executor = flux.job.FluxExecutor(handle_kwargs=c1.handle_kwargs)
futures = []
for rank in ("0", "1"):  # one job on each node of c1 (the broker on rank 1 is killed)
    spec = jobspec("echo $$ >> job.pid; exec sleep 120", f"long-{rank}.txt")
    spec.setattr("system.constraints", {"ranks": [rank]})
    futures.append(executor.submit(spec))
wait_for(lambda: os.path.exists("job.pid") and len(open("job.pid").read().split()) == 2)
job_pids = [int(pid) for pid in open("job.pid").read().split()]
broker_pid = int(c1.open().rpc("attr.get", {"name": "broker.pid"}, nodeid=1).get()["value"])
os.kill(broker_pid, signal.SIGKILL)
outcomes = []
for future in futures:
    try:
        outcomes.append(("status", future.result(timeout=60)))
    except Exception as exc:
        outcomes.append(("error", type(exc).__name__))
ended = flux.job.result(parent, c1.jobid)
facts = {
    "outcomes": outcomes,
    "job_pids": job_pids,
    "job_gone": wait_for(lambda: not any(alive(pid) for pid in job_pids), 30),
    "child_job_returncode": ended.returncode,
    "reported": wait_for(lambda: len(lost) > 0, 30),
}
time.sleep(0.5)
facts["lost"] = [[loss.name, list(loss.ranks), loss.reason] for loss in lost]
with flux.job.FluxExecutor(handle_kwargs=c0.handle_kwargs) as other:
    facts["c0_status"] = other.submit(jobspec("true", "c0.txt")).result(timeout=60)
executor.shutdown(wait=False, cancel_futures=True)
children.close(parent)
print("FACTS " + json.dumps(facts))
"""

# The relay (this process's carrier) is killed while a job runs in the child:
# the pending future fails, the job goes on, and a new executor re-attaches to
# it by jobid and gets its result; the job ran once.
RELAY_KILLED = """
child = children.children[0]
executor = flux.job.FluxExecutor(handle_kwargs=child.handle_kwargs)
future = executor.submit(jobspec("echo run >> runs.txt; sleep 4; echo done", "out.txt"))
jobid = future.jobid(timeout=60)
wait_for(lambda: os.path.exists("runs.txt"))
killed = carriers()
for pid in killed:
    os.kill(pid, signal.SIGKILL)
try:
    first = ("status", future.result(timeout=30))
except Exception as exc:
    first = ("error", type(exc).__name__)
executor.shutdown(wait=False, cancel_futures=True)
still_running = flux.job.get_job(child.open(), jobid)["state"]
again, attached = child.reattach([jobid])
status = attached[int(jobid)].result(timeout=60)
again.shutdown()
facts = {
    "killed": len(killed), "first": first, "state_after_kill": still_running,
    "attached_status": status, "output": open("out.txt").read(),
    "runs": open("runs.txt").read().split(),
}
children.close(parent)
print("FACTS " + json.dumps(facts))
"""


def run_scenario(body: str, tmp_path: Path, timeout: float = 180, nested: bool = False) -> dict:
    script = tmp_path / "scenario.py"
    script.write_text(textwrap.dedent(PRELUDE) + textwrap.dedent(body))
    command = [sys.executable, str(script)]
    if nested:  # the scenario in a 4-node allocation with an end (-t), like flux batch
        command = ["flux", "run", "-N4", "--exclusive", "-t", "10m", "flux", "start", *command]
    result = run_in_flux(command, cwd=tmp_path, size=4, timeout=timeout)
    facts = [line.split("FACTS ", 1)[1] for line in result.stdout.splitlines() if "FACTS " in line]
    assert result.returncode == 0, result.stdout[-4000:]
    assert facts, result.stdout[-4000:]
    return json.loads(facts[-1])


def test_job_through_relay_runs_on_the_child_nodes_and_ends_inside_the_allocation(
    tmp_path: Path,
) -> None:
    facts = run_scenario(THROUGH_RELAY, tmp_path, nested=True)
    assert [c["ranks"] for c in facts["children"]] == [[0, 1], [2, 3]]
    enclosing_end = facts["enclosing_expiration"]
    assert enclosing_end > 0
    for child in facts["children"]:
        assert child["uri"].startswith("ssh://matensemble-rank-"), child
        assert child["status"] == 0
        # each of the job's 2 tasks ran under a broker whose parent is one of
        # the child's own enclosing ranks, and the NUL byte came back
        lines = child["output"].strip().splitlines()
        parents = sorted(int(line.rsplit("local-", 1)[1]) for line in lines)
        assert parents == child["ranks"], child
        assert all(line.startswith("a\x00b ") for line in lines), child
        # the child's broker rank i runs on its i-th enclosing rank (local_rank)
        placed = {int(line.split()[1]): int(line.rsplit("local-", 1)[1]) for line in lines}
        assert placed == dict(zip(child["local_ranks"], child["ranks"], strict=True)), child
        # its walltime is what was left less the margin, counted from its submission,
        # so it ends before the allocation (by the margin less its start delay)
        assert enclosing_end - 60 < child["expiration"] < enclosing_end, (child, enclosing_end)
    assert facts["still_active"] == []
    assert facts["states"] == ["INACTIVE", "INACTIVE"]


def test_a_killed_child_broker_ends_its_jobs_and_is_reported_lost_once(tmp_path: Path) -> None:
    facts = run_scenario(BROKER_KILLED, tmp_path)
    assert ["status", 0] not in facts["outcomes"], facts
    assert facts["job_gone"], facts
    assert len(facts["job_pids"]) == 2, facts
    assert facts["child_job_returncode"] != 0, facts
    assert facts["reported"], facts
    assert [loss[:2] for loss in facts["lost"]] == [["c1", [2, 3]]], facts
    assert facts["c0_status"] == 0


def test_after_the_relay_dies_reattach_finds_the_job_running_and_its_result(
    tmp_path: Path,
) -> None:
    facts = run_scenario(RELAY_KILLED, tmp_path)
    assert facts["killed"] >= 1, facts
    assert facts["first"][0] == "error", facts
    assert facts["state_after_kill"] == "RUN", facts
    assert facts["attached_status"] == 0
    assert facts["output"].strip() == "done"
    assert facts["runs"] == ["run"]
