"""Every case under cases/ and snakemake_tests/: Snakemake's local executor and
``--executor matensemble`` must leave the same files, exit codes and rerun decisions."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import pytest

from .harness import all_cases, report, run_case

CASES = all_cases()

#: Known differences, each with the reason; strict: a fix makes them fail.
KNOWN_DIFFERENCES = {
    "snakemake_tests/test_core_dependent_threads": (
        "threads: workflow.cores * 0.75 needs a total of cores, which -j unlimited "
        "leaves unset; Snakemake raises while it builds the DAG, before any executor "
        "plugin runs (give the rule a fixed number, or --max-threads)"
    ),
}
# (a case whose difference is known to the line lists it in its differential.yaml,
# known_differences: the harness accepts exactly those and checks everything else)


#: Known differences of the Snakemake releases before a version (strict there).
KNOWN_DIFFERENCES_BEFORE = {
    "snakemake_tests/test_group_jobs_attempts": (
        "9.7",
        "Snakemake 9.6 logs a group job whose output is missing after success as "
        "'Error in group' with its members' 'Error in rule' lines (then retries it); "
        "its local executor logs only the MissingOutputException (9.27 logs neither)",
    ),
}


def _marks(case):
    reason = KNOWN_DIFFERENCES.get(case.name)
    if reason:
        return [pytest.mark.xfail(strict=True, reason=reason)]
    before = KNOWN_DIFFERENCES_BEFORE.get(case.name)
    if before:
        from importlib.metadata import version

        from packaging.version import Version

        older = Version(version("snakemake")) < Version(before[0])
        return [pytest.mark.xfail(older, strict=True, reason=before[1])]
    return []


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=_marks(c)) for c in CASES])
def test_same_as_local_executor(case, tmp_path):
    missing = case.missing_requirement()
    if missing:
        pytest.skip(f"{case.name}: {missing}")
    start = time.monotonic()
    cpu_start = resource.getrusage(resource.RUSAGE_CHILDREN)
    diffs, transcript = run_case(case, tmp_path)
    cpu_end = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = sum(getattr(cpu_end, f) - getattr(cpu_start, f) for f in ("ru_utime", "ru_stime"))
    # DIFFERENTIAL_REPORT_DIR=<dir>: one file per case as soon as it is done
    # (status, wall and CPU seconds, the differences and both transcripts)
    report_dir = os.environ.get("DIFFERENTIAL_REPORT_DIR")
    if report_dir:
        path = Path(report_dir) / (case.name.replace("/", "__") + ".txt")
        path.parent.mkdir(parents=True, exist_ok=True)
        status = "FAIL" if diffs else "PASS"
        path.write_text(
            f"{status} {case.name} {time.monotonic() - start:.1f} s wall,"
            f" {cpu:.1f} s CPU of Snakemake processes\n" + report(case, diffs, transcript)
        )
    if diffs:
        pytest.fail(report(case, diffs, transcript), pytrace=False)
