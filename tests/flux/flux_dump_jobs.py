"""Run inside a Flux instance: write every job of the instance as JSON lines."""

import json
import sys

import flux
import flux.job

handle = flux.Flux()
jobs = flux.job.JobList(handle, max_entries=0, filters=["pending", "running", "inactive"]).jobs()
with open(sys.argv[1], "w") as out:
    for job in jobs:
        info = job.to_dict(filtered=False)
        info["ranks"] = str(job.ranks)
        info["id_f58"] = job.id.f58
        found = flux.job.job_kvs_lookup(handle, job.id, keys=["jobspec", "R"]) or {}
        jobspec = found.get("jobspec") or {}
        resources = found.get("R") or {}
        # per rank of the job: the cores and GPUs Flux assigned ({"rank": "0", "core": ..})
        info["R_lite"] = [
            {"rank": item["rank"], **item.get("children", {})}
            for item in resources.get("execution", {}).get("R_lite", [])
        ]
        system = jobspec.get("attributes", {}).get("system", {})
        info["jobspec_dependencies"] = system.get("dependencies", [])
        info["jobspec_constraints"] = system.get("constraints", {})
        out.write(json.dumps(info, default=str) + "\n")
