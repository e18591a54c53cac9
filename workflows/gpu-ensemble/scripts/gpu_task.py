"""Use the GPU this job was given: time a matrix multiply and record the binding."""

import argparse
import json
import os
import re
import socket
import time

VISIBILITY = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES")


def node_id() -> str:
    """This node in the allocation: ``rank N``, the Flux broker rank (from the
    job's FLUX_URI, ``local://.../local-N``), where there is one; else the
    hostname. Hostnames can repeat across nodes (containers, simulated nodes),
    ranks cannot. In a child instance of the run (``FLUX_JOB_ID_PATH`` names
    the child's job) the rank is the child's: ``rank N of <child job>``."""
    match = re.search(r"/local-(\d+)$", os.environ.get("FLUX_URI", ""))
    if not match:
        return socket.gethostname()
    parents = os.environ.get("FLUX_JOB_ID_PATH", "").strip("/").split("/")[:-1]
    return f"rank {match.group(1)}" + (f" of {parents[-1]}" if parents else "")


def with_torch(size: int, repeats: int):
    import torch

    if not torch.cuda.is_available():
        return None
    device = torch.device("cuda:0")  # the first (only) visible device is ours
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        c = a @ b
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    return "torch:" + torch.cuda.get_device_name(0), elapsed, float(c.sum())


def with_cupy(size: int, repeats: int):
    import cupy

    a = cupy.random.standard_normal((size, size), dtype=cupy.float32)
    b = cupy.random.standard_normal((size, size), dtype=cupy.float32)
    cupy.cuda.Device(0).synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        c = a @ b
    cupy.cuda.Device(0).synchronize()
    return "cupy", time.perf_counter() - started, float(c.sum())


def with_numpy(size: int, repeats: int):
    import numpy

    rng = numpy.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=numpy.float32)
    b = rng.standard_normal((size, size), dtype=numpy.float32)
    started = time.perf_counter()
    for _ in range(repeats):
        c = a @ b
    return "cpu-fallback (no GPU runtime found)", time.perf_counter() - started, float(c.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--repeats", type=int, required=True)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()

    start = time.time()
    result = None
    for attempt in (with_torch, with_cupy):
        try:
            result = attempt(args.size, args.repeats)
        except Exception:
            result = None
        if result is not None:
            break
    if result is None:
        result = with_numpy(args.size, args.repeats)
    device, elapsed, checksum = result
    gflops = 2 * args.size**3 * args.repeats / elapsed / 1e9
    record = {
        "host": socket.gethostname(),
        "node": node_id(),
        "visible": {var: os.environ.get(var) for var in VISIBILITY},
        "gpu_ids": [g for g in (os.environ.get("CUDA_VISIBLE_DEVICES") or "").split(",") if g],
        "cpus": sorted(os.sched_getaffinity(0)),
        "flux_job_id": os.environ.get("FLUX_JOB_ID"),
        "device": device,
        "gflops": round(gflops, 2),
        "checksum": checksum,
        "start": start,
        "end": time.time(),
    }
    with open(args.output, "w") as stream:
        json.dump(record, stream, indent=1)


if __name__ == "__main__":
    main()
