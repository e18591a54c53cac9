"""Shared pieces of the benchmarks: run snakemake in a fresh directory and measure it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

# Runs snakemake in-process and writes the process's own CPU time and peak
# memory (children excluded) to the file named by MATENSEMBLE_BENCH_RUSAGE.
_MEASURED_SNAKEMAKE = textwrap.dedent(
    """
    import atexit, json, os, resource, sys
    def _report():
        usage = resource.getrusage(resource.RUSAGE_SELF)
        with open(os.environ["MATENSEMBLE_BENCH_RUSAGE"], "w") as out:
            json.dump({"cpu_s": usage.ru_utime + usage.ru_stime,
                       "maxrss_mb": usage.ru_maxrss / 1024}, out)
    atexit.register(_report)
    from snakemake.cli import main
    sys.argv = ["snakemake", *sys.argv[1:]]
    main()
    """
)


@dataclass
class Measurement:
    label: str
    wall_s: float
    cpu_s: float
    maxrss_mb: float
    returncode: int
    #: CPU seconds matensemble spent writing its journal (from the journal's end line)
    journal_cpu_s: float | None = None
    #: the snakemake command line (arguments after ``snakemake``) and the tail of its
    #: output (stdout and stderr together: Snakemake prints a Snakefile's errors to stdout)
    command: tuple[str, ...] = ()
    output_tail: str = ""

    def per_job_ms(self, jobs: int) -> float:
        return 1000 * self.cpu_s / jobs


def fresh_workdir(snakefile: str, prefix: str, files: dict[str, str] | None = None) -> Path:
    """A new directory with ``snakefile`` and ``files`` (name -> text) in it."""
    workdir = Path(tempfile.mkdtemp(prefix=f"matensemble-bench-{prefix}-"))
    (workdir / "Snakefile").write_text(textwrap.dedent(snakefile))
    for name, text in (files or {}).items():
        (workdir / name).write_text(text)
    return workdir


def run_snakemake(
    label: str,
    snakefile: str,
    args: list[str],
    timeout: float = 3600,
    files: dict[str, str] | None = None,
) -> Measurement:
    """Run snakemake with ``args`` in a new directory; wall time, own CPU, peak RSS."""
    return run_snakemake_in(label, snakefile, args, timeout, files)[0]


def run_snakemake_in(
    label: str,
    snakefile: str,
    args: list[str],
    timeout: float = 3600,
    files: dict[str, str] | None = None,
) -> tuple[Measurement, Path]:
    """Like :func:`run_snakemake`, also returning the working directory."""
    workdir = fresh_workdir(snakefile, label.replace(" ", "-"), files)
    rusage = workdir / "rusage.json"
    env = {**os.environ, "MATENSEMBLE_BENCH_RUSAGE": str(rusage)}
    started = time.perf_counter()
    command = ("--quiet", "all", *args)
    process = subprocess.run(
        [sys.executable, "-c", _MEASURED_SNAKEMAKE, *command],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    wall = time.perf_counter() - started
    if process.returncode != 0:
        sys.stderr.write(process.stdout[-4000:])
    usage = (
        json.loads(rusage.read_text())
        if rusage.exists()
        else {"cpu_s": float("nan"), "maxrss_mb": float("nan")}
    )
    measurement = Measurement(
        label,
        wall,
        usage["cpu_s"],
        usage["maxrss_mb"],
        process.returncode,
        journal_cpu(workdir),
        command,
        process.stdout[-4000:],
    )
    return measurement, workdir


def journal_cpu(workdir: Path) -> float | None:
    for journal in workdir.glob(".snakemake/matensemble/*/journal.jsonl"):
        for line in journal.read_text().splitlines():
            event = json.loads(line)
            if event.get("event") == "end":
                return event.get("journal_cpu_s")
    return None


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join(
        [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)]
    )
