"""What the local machine offers: the cores this process may use and its GPUs.

No clocks here but one: GPU detection gives ``nvidia-smi`` at most
:data:`NVIDIA_SMI_TIMEOUT_S` seconds (wall time). Bad settings raise
:class:`~..errors.SettingsError`; detection never raises (no GPUs found is
an empty list).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

from ..cpulist import parse_cpu_list
from ..errors import SettingsError

log = logging.getLogger("snakemake.logging.matensemble.local")

GPU_VISIBILITY_VARS = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES")
#: Seconds ``nvidia-smi`` may take to list the GPUs before detection moves on.
NVIDIA_SMI_TIMEOUT_S = 20


#: Compatibility name for :func:`~..cpulist.parse_cpu_list` (the Flux backend
#: imports it from here); remove once it imports from ``cpulist``.
parse_id_list = parse_cpu_list


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity mask)."""
    return sorted(os.sched_getaffinity(0))


def local_cores(setting: str | None) -> tuple[list[int], dict[int, int]]:
    """Core ids the packer hands out, and the CPU each one is pinned to.

    ``setting`` is None (all usable CPUs), a count (``"8"``) or a CPU list
    (``"0-3,6"``). A count above the usable CPUs declares virtual cores that
    share CPUs (useful for sleep-heavy tests); a warning says so.
    """
    cpus = usable_cpus()
    if setting is None or not str(setting).strip():
        return cpus, {c: c for c in cpus}
    text = str(setting).strip()
    if text.isdigit():
        count = int(text)
        if count < 1:
            raise SettingsError(
                "local_cores",
                setting,
                "must be at least 1",
                "give a count such as 4 or a CPU list such as 0-3",
            )
        if count <= len(cpus):
            chosen = cpus[:count]
            return chosen, {c: c for c in chosen}
        log.warning(
            f"matensemble: --matensemble-local-cores={count} is more than the "
            f"{len(cpus)} CPUs this process may use: cores will share CPUs "
            "(oversubscribed)."
        )
        return list(range(count)), {i: cpus[i % len(cpus)] for i in range(count)}
    try:
        chosen = parse_cpu_list(text)
    except ValueError:
        raise SettingsError(
            "local_cores", setting, "is neither a count nor a CPU list", "give e.g. 4 or 0-3,6"
        ) from None
    outside = sorted(set(chosen) - set(cpus))
    if outside or not chosen:
        raise SettingsError(
            "local_cores",
            setting,
            f"names CPUs this process may not use ({outside}; usable: {cpus})",
            "list only usable CPUs, or give a count",
        )
    return chosen, {c: c for c in chosen}


def local_gpus(setting: str | None) -> list[str]:
    """GPU ids jobs may be given: from ``setting`` or detected.

    ``setting``: None (detect), ``"none"``/``"0"`` (no GPUs), a count (``"2"``
    gives ids 0 and 1), or a list of ids (``"0,1"``, ``"0-3"``, or device names
    such as ``GPU-8f3a...`` that ``CUDA_VISIBLE_DEVICES`` accepts). Asking for
    GPUs this machine does not show is allowed (detection can miss devices),
    with a warning, as for ``--matensemble-local-cores``. Raises
    :class:`SettingsError` for a value that is none of these.
    """
    if setting is None or not str(setting).strip():
        return detect_gpus()
    text = str(setting).strip()
    if text.lower() in {"none", "0"}:
        return []
    if text.isdecimal():
        ids = [str(i) for i in range(int(text))]
    else:
        items = [part.strip() for part in text.split(",") if part.strip()]
        bad = [item for item in items if not _GPU_ID.fullmatch(item)]
        if bad or not items:
            raise SettingsError(
                "local_gpus",
                setting,
                "is neither a count, a list of GPU ids nor 'none'",
                "give e.g. 2, 0,1, 0-3 or none",
            )
        if all(re.fullmatch(r"\d+(-\d+)?", item) for item in items):
            try:
                ids = [str(i) for i in parse_cpu_list(text)]
            except ValueError as error:
                raise SettingsError(
                    "local_gpus", setting, f"has a bad range: {error}", "give e.g. 0-3"
                ) from None
        else:
            ids = list(dict.fromkeys(items))
    _warn_unseen_gpus(text, ids)
    return ids


#: A GPU id: an index, or a device name such as ``GPU-<uuid>`` or ``MIG-<uuid>``.
_GPU_ID = re.compile(r"\d+(-\d+)?|[A-Za-z][\w.:/-]*")


def _warn_unseen_gpus(setting: str, ids: list[str]) -> None:
    """Warn when ``--matensemble-local-gpus`` names GPUs this machine does not show."""
    seen = detect_gpus()
    unseen = [gpu for gpu in ids if gpu not in seen]
    if not unseen:
        return
    shown = f" ({','.join(seen)})" if seen else ""
    log.warning(
        f"matensemble: --matensemble-local-gpus={setting} is more than the {len(seen)} "
        f"GPU(s) this machine shows{shown}: GPU(s) {','.join(unseen)} may not exist, "
        "and jobs given them will not find a GPU."
    )


def detect_gpus() -> list[str]:
    """GPU ids of this machine, restricted by any ``*_VISIBLE_DEVICES`` already set."""
    for var in GPU_VISIBILITY_VARS:
        value = os.environ.get(var)
        if value is not None:
            return [part.strip() for part in value.split(",") if part.strip()]
    nvidia = _nvidia_gpus()
    if nvidia:
        return nvidia
    return _amd_gpus()


def _nvidia_gpus() -> list[str]:
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=NVIDIA_SMI_TIMEOUT_S,
                check=True,
            ).stdout
            return [line.strip() for line in out.splitlines() if line.strip()]
        except (OSError, subprocess.SubprocessError):
            log.debug("nvidia-smi is present but failed; looking for /dev/nvidia*")
    devices = sorted(
        int(m.group(1))
        for p in Path("/dev").glob("nvidia*")
        if (m := re.fullmatch(r"nvidia(\d+)", p.name))
    )
    return [str(i) for i in devices]


def _amd_gpus() -> list[str]:
    """AMD GPUs from the KFD topology (nodes with SIMD units are GPUs)."""
    nodes = Path("/sys/class/kfd/kfd/topology/nodes")
    if not nodes.is_dir():
        return []
    count = 0
    for node in sorted(nodes.iterdir(), key=lambda p: int(p.name) if p.name.isdigit() else 0):
        props = node / "properties"
        try:
            text = props.read_text()
        except OSError:
            continue
        match = re.search(r"^simd_count\s+(\d+)", text, re.MULTILINE)
        if match and int(match.group(1)) > 0:
            count += 1
    return [str(i) for i in range(count)]
