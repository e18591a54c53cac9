"""A real one-node Slurm cluster for the tests of the documented HPC path.

Found when ``salloc`` is on PATH and a node is idle; started with
``tests/slurm/start-slurm.sh`` when this is root and Debian's slurm-wlm is
installed but not running. Otherwise the tests skip and say why (where CI set
``MATENSEMBLE_REQUIRE_SLURM=1``, that skip is a failure: tests/conftest.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

START = Path(__file__).with_name("start-slurm.sh")


def _idle() -> bool:
    sinfo = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True)
    return sinfo.returncode == 0 and "idle" in sinfo.stdout


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    if shutil.which("salloc") is None or shutil.which("sinfo") is None:
        pytest.skip(
            "no Slurm: salloc/sinfo are not on PATH (Debian's slurm-wlm is not installed; "
            "as root, bash tests/slurm/start-slurm.sh installs and starts a one-node cluster)"
        )
    if _idle():
        return
    if os.geteuid() != 0:
        pytest.skip("no Slurm: no idle node, and starting slurmctld/slurmd needs root")
    started = subprocess.run(["bash", str(START)], capture_output=True, text=True)
    if started.returncode != 0 or not _idle():
        pytest.skip(f"no Slurm: {START.name} could not start a cluster: {started.stderr[-500:]}")


#: set by .ci/run: the campaign tests run apart, side by side (``-n 7``), not in
#: the default run
APART = "MATENSEMBLE_CAMPAIGN_TESTS_APART"
CAMPAIGNS = "test_campaign.py"


def pytest_collection_modifyitems(config, items):
    """Where ``MATENSEMBLE_CAMPAIGN_TESTS_APART=1`` and the run does not name
    test_campaign.py, its tests are deselected (not skipped): .ci/run runs them
    in a step of their own."""
    if os.environ.get(APART) != "1" or any(CAMPAIGNS in arg for arg in config.args):
        return
    apart = [item for item in items if item.path.name == CAMPAIGNS]
    if apart:
        config.hook.pytest_deselected(items=apart)
        items[:] = [item for item in items if item.path.name != CAMPAIGNS]
