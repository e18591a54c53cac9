"""Differential harness: run one Snakefile with Snakemake's local executor and with
``--executor matensemble``, each in a fresh copy of its case directory, and list every
difference a user could see: exit status, files (bytes, mode, links), what a second
run or a dry run decides, and chosen lines of the output.

A case is a directory with a Snakefile (or whatever its args name) and a
``differential.yaml`` (not copied into the run directories):

    args: [...]              # for both sides (targets, --config, flags)
    cores: 2                 # local side: --cores N; plugin side: --matensemble-local-cores N
                             # (always given: the plugin never sees more cores than local)
    expect: success          # or failure: both sides must exit non-zero; a side killed at
                             # the time limit, or one that leaves processes running that
                             # the other does not, is a difference either way
    output_contains: [re]    # each regex must match the output of the first run, both sides
    nondeterministic:        # glob (relative path) -> how to compare it instead of bytes
      "bench/*.txt": tsv_header    # same first line, same row count, same column counts
      "bench/*.jsonl": benchmark   # TSV: as tsv_header; JSON lines: records equal
                                   # without the measured fields (s, max_rss, cpu_time...)
      "x.log": exists              # present on both sides (and same mode)
      "y.txt": lines               # same number of lines
    env: {NAME: value}       # extra environment for every Snakemake call
    prepare: [shell, ...]    # run in each fresh directory before the first run
    steps:                   # after the first run; default: [{dryrun: []}]
      - run: [args]          # a real run with each side's executor (after args above);
                             # must succeed when the case expects success
      - dryrun: [args]       # `snakemake -n --cores N` (args above + these) with the local
                             # executor: same jobs and reasons
      - summary: [args]      # `snakemake --summary`: same rows (date column dropped)
      - shell: "cmd"         # run in both directories (e.g. touch an input)
    requires:                # skip the case (with reason) unless present
      commands: [conda]
      modules: [nbformat]
      snakemake: ">=9.21.1"  # a version range, with
      why: "..."             # why (Snakemake's own local run fails outside it)
    timeout: 120
    known_differences:       # differences accepted for this case, each verbatim as the
      why: "..."             # harness reports it, with why; every one must occur (a fix
      differences:           # makes the case fail until it is removed), any other fails
        - "..."                        # with every Snakemake
        - {text: "...", snakemake: "<9.7"}   # only with the Snakemake releases in range

Each side runs with TMPDIR set to its own empty system temporary directory. In args
and env, ``{workdir}`` and ``{systmp}`` stand for the side's run directory and that
directory; in outputs, files and logs, both are replaced by ``<WORKDIR>`` and
``<SYSTMP>`` before anything is compared.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml

HERE = Path(__file__).parent
CASE_ROOTS = (HERE / "cases", HERE / "snakemake_tests")
SPEC_NAME = "differential.yaml"
SIDES = ("local", "matensemble")
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
DEFAULT_STEPS = ({"dryrun": []},)
OUTPUT_TAIL_LINES = 60
KNOWN_KEYS = {
    "args",
    "cores",
    "expect",
    "output_contains",
    "nondeterministic",
    "env",
    "prepare",
    "steps",
    "requires",
    "timeout",
    "description",
    "known_differences",
}


@dataclass
class Case:
    name: str
    path: Path
    args: list[str] = field(default_factory=list)
    cores: int = 2
    expect: str = "success"
    output_contains: list[str] = field(default_factory=list)
    nondeterministic: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    prepare: list[str] = field(default_factory=list)
    steps: list[dict] = field(default_factory=lambda: [dict(s) for s in DEFAULT_STEPS])
    requires: dict = field(default_factory=dict)
    timeout: float = 150
    #: {"why": reason, "differences": [exact text of each accepted difference]}
    known_differences: dict = field(default_factory=dict)

    def missing_requirement(self) -> str | None:
        wanted = self.requires.get("snakemake")
        if wanted:
            from importlib.metadata import version

            from packaging.specifiers import SpecifierSet

            have = version("snakemake")
            if have not in SpecifierSet(wanted):
                why = self.requires.get("why", "")
                return f"needs Snakemake {wanted}, this is {have}" + (f": {why}" if why else "")
        for command in self.requires.get("commands", []):
            if shutil.which(command) is None:
                return f"{command} is not installed"
        for module in self.requires.get("modules", []):
            if importlib.util.find_spec(module) is None:
                return f"Python module {module} is not installed"
        return None


def load_case(path: Path) -> Case:
    spec = yaml.safe_load((path / SPEC_NAME).read_text()) or {}
    unknown = set(spec) - KNOWN_KEYS
    if unknown:
        raise ValueError(f"{path / SPEC_NAME}: unknown keys {sorted(unknown)}")
    spec.pop("description", None)
    if spec.get("expect", "success") not in ("success", "failure"):
        raise ValueError(f"{path / SPEC_NAME}: expect must be success or failure")
    spec["args"] = [str(a) for a in spec.get("args", [])]
    spec["env"] = {str(k): str(v) for k, v in (spec.get("env") or {}).items()}
    known = spec.get("known_differences")
    if known is not None and (
        not isinstance(known, dict)
        or set(known) != {"why", "differences"}
        or not str(known["why"]).strip()
        or not isinstance(known["differences"], list)
        or not known["differences"]
        or not all(_is_known_difference(d) for d in known["differences"])
    ):
        raise ValueError(
            f"{path / SPEC_NAME}: known_differences needs 'why' (the reason) and "
            "'differences' (a list of each difference's exact text, or of "
            "{text: ..., snakemake: <version range>})"
        )
    return Case(name=f"{path.parent.name}/{path.name}", path=path, **spec)


def _is_known_difference(entry: object) -> bool:
    if isinstance(entry, str):
        return True
    return (
        isinstance(entry, dict)
        and set(entry) == {"text", "snakemake"}
        and all(isinstance(v, str) for v in entry.values())
    )


def all_cases() -> list[Case]:
    cases = []
    for root in CASE_ROOTS:
        for spec in sorted(root.glob(f"*/{SPEC_NAME}")):
            cases.append(load_case(spec.parent))
    return cases


# ---------------------------------------------------------------- running


@dataclass
class Result:
    argv: list[str]
    returncode: int
    output: str
    #: killed at the case's time limit (a hang is a difference, never agreement)
    timed_out: bool = False


@dataclass
class Side:
    name: str
    workdir: Path
    systmp: Path

    def normalize_text(self, text: str) -> str:
        for path, token in self.replacements():
            text = text.replace(path, token)
        return text

    def normalize_bytes(self, data: bytes) -> bytes:
        for path, token in self.replacements():
            data = data.replace(path.encode(), token.encode())
        return data

    def replacements(self) -> list[tuple[str, str]]:
        pairs = []
        for path, token in ((self.workdir, "<WORKDIR>"), (self.systmp, "<SYSTMP>")):
            pairs.append((str(path), token))
            real = os.path.realpath(path)
            if real != str(path):
                pairs.append((real, token))
        return sorted(pairs, key=lambda p: -len(p[0]))


def base_env(case: Case, side: Side) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SNAKEMAKE_", "FLUX_"))}
    for name in ("TMPDIR", "TMP", "TEMP", "TEMPDIR"):
        env.pop(name, None)
    # Snakemake and its plugins are imported by every Snakemake process of the suite
    # (hundreds): let Python cache their bytecode instead of compiling them each time.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["TMPDIR"] = str(side.systmp)
    env.update({k: expand(v, side) for k, v in case.env.items()})
    return env


def executor_args(case: Case, side: Side) -> list[str]:
    if side.name == "local":
        return ["--cores", str(case.cores)]
    # the plugin's allocation is the case's cores, whatever this machine has
    return [
        "--executor",
        "matensemble",
        "-j",
        "unlimited",
        "--matensemble-backend",
        "local",
        "--matensemble-local-cores",
        str(case.cores),
    ]


def expand(text: str, side: Side) -> str:
    return text.replace("{workdir}", str(side.workdir)).replace("{systmp}", str(side.systmp))


def expand_args(args: list[str], side: Side) -> list[str]:
    return [expand(a, side) for a in args]


def extra_args() -> list[str]:
    """DIFFERENTIAL_ARGS: more arguments for every Snakemake call of both sides
    (e.g. "--scheduler greedy" where a Snakemake release's ILP solver cannot run)."""
    return shlex.split(os.environ.get("DIFFERENTIAL_ARGS", ""))


def run_snakemake(case: Case, side: Side, argv_tail: list[str], *, executor: bool) -> Result:
    argv = [*SNAKEMAKE]
    if executor:
        argv += executor_args(case, side)
    argv += [*extra_args(), *expand_args(argv_tail, side)]
    # output to a file, not a pipe: a job process Snakemake leaves behind (e.g. a pipe
    # consumer whose producer failed, still blocked on the FIFO) would hold a pipe open
    out_path = side.systmp.parent / "run-output.txt"
    with open(out_path, "wb") as out:
        process = subprocess.Popen(
            argv,
            cwd=side.workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=base_env(case, side),
            stdin=subprocess.DEVNULL,
        )
        try:
            code = process.wait(timeout=case.timeout)
            note, timed_out = "", False
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
            note, timed_out = f"\n[differential: timed out after {case.timeout} s]", True
    return Result(argv, code, out_path.read_text(errors="replace") + note, timed_out)


def kill_leftovers(root: Path) -> list[str]:
    """Kill processes still running in a directory under ``root`` (job processes a
    run left behind); return their command lines."""
    killed = []
    prefix = str(root.resolve()) + os.sep
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if (cwd + os.sep).startswith(prefix):
            try:
                os.kill(int(entry), signal.SIGKILL)
            except OSError:
                continue
            killed.append(cmdline.decode(errors="replace").strip())
    return killed


def forked_checks(case: Case, sides: list[Side], argv_tail: list[str]) -> dict[str, Result]:
    """Read-only checks (``--dry-run``, ``--summary``) for both sides at once, each in a
    child forked from this process after it has imported Snakemake: the same
    ``snakemake.cli.main`` that ``python -m snakemake`` runs, without paying Python's
    and Snakemake's start-up again for every check (most of such a check's cost).
    DIFFERENTIAL_NO_FORK=1 runs them as ``python -m snakemake`` subprocesses instead."""
    if os.environ.get("DIFFERENTIAL_NO_FORK") == "1" or not hasattr(os, "fork"):
        return both(lambda side: run_snakemake(case, side, argv_tail, executor=False), sides)
    _warm_up_snakemake()

    children = {}
    for side in sides:
        argv = [*extra_args(), *expand_args(argv_tail, side)]
        out_path = side.systmp.parent / "check-output.txt"
        env = base_env(case, side)
        pid = os.fork()
        if pid == 0:  # child: never returns
            _forked_main(argv, side.workdir, env, out_path)
        children[side.name] = (pid, [*SNAKEMAKE, *argv], out_path)
    results = {}
    deadline = time.monotonic() + case.timeout
    for name, (pid, argv, out_path) in children.items():
        code, timed_out = None, False
        while code is None:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
            elif time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                code, timed_out = -9, True
            else:
                time.sleep(0.02)
        results[name] = Result(argv, code, out_path.read_text(errors="replace"), timed_out)
    return results


_WARM = False


def _warm_up_snakemake() -> None:
    """Import Snakemake and build its argument parser (which imports every plugin)
    once in this process, so that forked children start with all of it loaded."""
    global _WARM
    if not _WARM:
        import snakemake.cli

        snakemake.cli.get_argument_parser()
        _WARM = True


def _forked_main(argv: list[str], cwd: Path, env: dict[str, str], out_path: Path) -> None:
    code = 1
    try:
        fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        sys.stdout = sys.__stdout__ = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = sys.__stderr__ = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        tempfile.tempdir = None
        sys.argv = ["snakemake", *argv]
        from snakemake.cli import main

        try:
            main(argv)
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def run_shell(case: Case, side: Side, command: str) -> Result:
    process = subprocess.run(
        command,
        shell=True,
        cwd=side.workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        timeout=60,
        env=base_env(case, side),
    )
    return Result([command], process.returncode, process.stdout)


def both(function, sides: list[Side]) -> dict[str, Result]:
    """Run ``function(side)`` for both sides at once."""
    with ThreadPoolExecutor(max_workers=len(sides)) as pool:
        futures = {side.name: pool.submit(function, side) for side in sides}
        return {name: future.result() for name, future in futures.items()}


def prepare_sides(case: Case, tmp_path: Path) -> list[Side]:
    sides = []
    for name in SIDES:
        # same directory name on both sides: only the parent differs
        workdir = tmp_path / name / "work"
        systmp = tmp_path / name / "systmp"
        systmp.mkdir(parents=True)
        shutil.copytree(
            case.path,
            workdir,
            symlinks=True,
            ignore=shutil.ignore_patterns(SPEC_NAME, "__pycache__", ".snakemake"),
        )
        sides.append(Side(name, workdir, systmp))
    return sides


# ---------------------------------------------------------------- snapshots


@dataclass
class Entry:
    kind: str  # file, dir, link
    mode: int
    data: bytes = b""


def snapshot(side: Side) -> dict[str, Entry]:
    """Every path under the run directory except .snakemake/ and __pycache__/."""
    entries: dict[str, Entry] = {}
    for dirpath, dirnames, filenames in os.walk(side.workdir):
        rel_dir = os.path.relpath(dirpath, side.workdir)
        # .snakemake/ is Snakemake's own bookkeeping; __pycache__/ holds compiled
        # copies of modules a workflow imports (with the run's timestamps)
        dirnames[:] = [
            d for d in dirnames if d != "__pycache__" and not (rel_dir == "." and d == ".snakemake")
        ]
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            st = os.lstat(full)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                target = side.normalize_text(os.readlink(full))
                entries[rel] = Entry("link", 0, target.encode())
            elif stat.S_ISDIR(st.st_mode):
                entries[rel] = Entry("dir", mode)
            elif stat.S_ISREG(st.st_mode):
                with open(full, "rb") as handle:
                    entries[rel] = Entry("file", mode, side.normalize_bytes(handle.read()))
            else:
                entries[rel] = Entry(stat.filemode(st.st_mode)[0], mode)
        # symlinked directories are not followed (os.walk default)
    return entries


def nondeterministic_kind(case: Case, rel: str) -> str | None:
    for pattern, kind in case.nondeterministic.items():
        if fnmatch.fnmatchcase(rel, pattern):
            return kind
    return None


def tsv_shape(data: bytes) -> tuple:
    lines = data.decode(errors="replace").splitlines()
    header = lines[0] if lines else None
    return header, len(lines), [len(line.split("\t")) for line in lines]


# benchmark fields that are measurements (differ from run to run by nature)
BENCHMARK_MEASURES = {
    "s",
    "h:m:s",
    "max_rss",
    "max_vms",
    "max_uss",
    "max_pss",
    "io_in",
    "io_out",
    "mean_load",
    "cpu_time",
    "cpu_usage",
}


def benchmark_shape(data: bytes) -> object:
    """A benchmark file without its measurements: for TSV, the header and the number
    of rows and columns; for JSON lines, every record without its measured fields."""
    text = data.decode(errors="replace")
    lines = text.splitlines()
    if lines and lines[0].lstrip().startswith("{"):
        records = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                records.append(("unparsable", line))
                continue
            records.append({k: v for k, v in record.items() if k not in BENCHMARK_MEASURES})
        return records
    return tsv_shape(data)


def text_diff(a: bytes, b: bytes, name: str) -> str:
    try:
        a_text, b_text = a.decode(), b.decode()
    except UnicodeDecodeError:
        return f"    binary: {len(a)} bytes (local) vs {len(b)} bytes (matensemble)"
    lines = list(
        difflib.unified_diff(
            a_text.splitlines(),
            b_text.splitlines(),
            f"local/{name}",
            f"matensemble/{name}",
            lineterm="",
        )
    )
    if len(lines) > 40:
        lines = [*lines[:40], f"... ({len(lines) - 40} more diff lines)"]
    return "\n".join("    " + line for line in lines)


def compare_snapshots(case: Case, local: dict[str, Entry], plugin: dict[str, Entry]) -> list[str]:
    diffs = []
    for rel in sorted(set(local) | set(plugin)):
        a, b = local.get(rel), plugin.get(rel)
        if a is None or b is None:
            present, missing = ("local", "matensemble") if b is None else ("matensemble", "local")
            entry = a or b
            diffs.append(f"{rel}: {entry.kind} present with {present} only, not with {missing}")
            continue
        if a.kind != b.kind:
            diffs.append(f"{rel}: a {a.kind} with local, a {b.kind} with matensemble")
            continue
        if a.mode != b.mode:
            diffs.append(f"{rel}: mode {a.mode:04o} with local, {b.mode:04o} with matensemble")
        if a.kind == "link" and a.data != b.data:
            diffs.append(
                f"{rel}: symlink to {a.data.decode()!r} with local, "
                f"to {b.data.decode()!r} with matensemble"
            )
        if a.kind != "file":
            continue
        kind = nondeterministic_kind(case, rel)
        if kind == "exists":
            continue
        if kind == "tsv_header":
            if tsv_shape(a.data) != tsv_shape(b.data):
                diffs.append(
                    f"{rel}: table shape (header, rows, columns per row) differs: "
                    f"{tsv_shape(a.data)} with local, {tsv_shape(b.data)} with matensemble"
                )
            continue
        if kind == "benchmark":
            if benchmark_shape(a.data) != benchmark_shape(b.data):
                diffs.append(
                    f"{rel}: benchmark records without measurements differ: "
                    f"{benchmark_shape(a.data)} with local, "
                    f"{benchmark_shape(b.data)} with matensemble"
                )
            continue
        if kind == "lines":
            na, nb = len(a.data.splitlines()), len(b.data.splitlines())
            if na != nb:
                diffs.append(f"{rel}: {na} lines with local, {nb} with matensemble")
            continue
        if kind is not None:
            raise ValueError(f"{case.name}: unknown nondeterministic kind {kind!r}")
        if a.data != b.data:
            diffs.append(f"{rel}: contents differ\n{text_diff(a.data, b.data, rel)}")
    return diffs


# ---------------------------------------------------------------- output parsing

TIMESTAMP = re.compile(r"^\[\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4}\]$")
BLOCK_HEAD = re.compile(r"^(local)?(rule|checkpoint) (\S+):$")
LIST_KEYS = ("input", "output", "log", "reason", "wildcards", "resources", "benchmark")


def normalize_value(key: str, value: str) -> str:
    if key not in LIST_KEYS:
        return value
    parts = []
    for part in value.split("; "):
        prefix, sep, rest = part.rpartition(": ")
        items = sorted(rest.split(", "))
        parts.append(f"{prefix}{sep}{', '.join(items)}")
    return "; ".join(sorted(parts))


def job_blocks(output: str, executor_neutral: bool = False) -> list[str]:
    """The job blocks Snakemake prints (rule name, input, output, reason, wildcards...),
    without job ids and timestamps, each block's lists sorted, blocks sorted.

    ``executor_neutral``: for output of runs with different executors, drop what only
    says how a job is executed ("localrule" vs "rule", the resources line, whose
    tmpdir a remote executor prints as <TBD> until the job runs)."""
    blocks: list[list[str]] = []
    current: list[str] | None = None
    head_indent = 0
    for line in output.splitlines():
        indent = len(line) - len(line.lstrip(" "))
        head = BLOCK_HEAD.match(line.strip())
        # a group job's members are printed indented under "Group job g": the
        # same blocks, one level deeper
        if head and indent in (0, 4):
            current = [line.strip().removeprefix("local") if executor_neutral else line.strip()]
            head_indent = indent
            blocks.append(current)
            continue
        if current is not None and indent >= head_indent + 4 and ": " in line:
            key, _, value = line.strip().partition(": ")
            if key == "jobid" or (executor_neutral and key == "resources"):
                continue
            current.append(f"    {key}: {normalize_value(key, value)}")
            continue
        current = None
    return [line for block in sorted(blocks) for line in block]


def job_stats(output: str) -> list[str]:
    """The first 'Job stats' table (rule, count), sorted."""
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "Job stats:":
            rows = []
            for row in lines[i + 3 :]:
                parts = row.split()
                if len(parts) != 2 or not parts[1].isdigit():
                    break
                rows.append(f"{parts[0]} {parts[1]}")
            return sorted(rows)
    return []


def nothing_to_be_done(output: str) -> bool:
    return "Nothing to be done" in output


def summary_rows(output: str) -> list[str]:
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("output_file\t"):
            header = line.split("\t")
            keep = [j for j, col in enumerate(header) if col != "date"]
            rows = []
            for row in lines[i:]:
                cols = row.split("\t")
                if len(cols) != len(header):
                    continue
                rows.append("\t".join(cols[j] for j in keep))
            return [rows[0], *sorted(rows[1:])]
    return []


def error_rules(output: str) -> list[str]:
    """Rules reported failing, each with how many times ("b x3": three 'Error in rule
    b' lines, e.g. one per failed attempt), also those listed (indented) under a
    group's error."""
    counts = Counter(re.findall(r"^\s*Error in rule (\S+):", output, re.M))
    return [f"{rule} x{count}" for rule, count in sorted(counts.items())]


def tail(text: str, n: int = OUTPUT_TAIL_LINES) -> str:
    lines = [line for line in text.splitlines() if not TIMESTAMP.match(line)]
    return "\n".join(lines[-n:])


def list_diff(what: str, a: list[str], b: list[str]) -> list[str]:
    if a == b:
        return []
    lines = difflib.unified_diff(a, b, "local", "matensemble", lineterm="")
    body = "\n".join("    " + line for line in "\n".join(lines).splitlines())
    return [f"{what} differ:\n{body}"]


# ---------------------------------------------------------------- one case


def exit_diffs(what: str, results: dict[str, Result], expect: str) -> list[str]:
    codes = {name: r.returncode for name, r in results.items()}
    hung = [name for name, r in results.items() if r.timed_out]
    if hung:  # killed at the limit: never an agreement, whatever the other side did
        return [f"{what}: killed at the time limit with {' and '.join(hung)}"]
    diffs = []
    if (codes["local"] == 0) != (codes["matensemble"] == 0):
        diffs.append(
            f"{what}: exit code {codes['local']} with local, {codes['matensemble']} with "
            "matensemble"
        )
    elif expect == "success" and codes["local"] != 0:
        diffs.append(f"{what}: both sides failed (exit {codes}) but the case expects success")
    elif expect == "failure" and codes["local"] == 0:
        diffs.append(f"{what}: both sides succeeded but the case expects failure")
    return diffs


def leftover_diffs(what: str, left: dict[str, list[str]]) -> list[str]:
    """Processes (normalized command lines) the plugin left running that Snakemake's
    local executor did not (it leaves some itself: a pipe consumer whose producer
    failed stays blocked on the FIFO; fewer of those with the plugin is no fault)."""
    if len(left) != 2:
        return []
    extra = list(left["matensemble"])
    for command in left["local"]:
        if command in extra:
            extra.remove(command)
    return [f"{what}: left running with matensemble only: {c}" for c in extra]


def run_step_expect(case: Case) -> str:
    """What a ``run`` step must end with: success when the case expects success."""
    return "success" if case.expect == "success" else "any"


def run_case(case: Case, tmp_path: Path) -> tuple[list[str], dict[str, list[str]]]:
    """Run the case; return (differences, transcript per side)."""
    sides = prepare_sides(case, tmp_path)
    by_name = {s.name: s for s in sides}
    transcript: dict[str, list[str]] = {s.name: [] for s in sides}
    diffs: list[str] = []

    def record(what: str, results: dict[str, Result]) -> None:
        left: dict[str, list[str]] = {}
        for name, result in results.items():
            leftovers = kill_leftovers(by_name[name].workdir.parent)
            left[name] = sorted(by_name[name].normalize_text(c) for c in leftovers)
            transcript[name].append(
                f"$ {' '.join(result.argv)}   # {what}, exit {result.returncode}\n"
                + tail(by_name[name].normalize_text(result.output))
                + "".join(f"\n[differential: left running, killed: {c}]" for c in leftovers)
            )
        diffs.extend(leftover_diffs(what, left))

    for command in case.prepare:
        results = both(lambda side, c=command: run_shell(case, side, c), sides)
        record("prepare", results)
        for name, result in results.items():
            if result.returncode != 0:
                raise RuntimeError(f"prepare {command!r} failed on {name}: {result.output}")

    first = both(lambda side: run_snakemake(case, side, case.args, executor=True), sides)
    record("first run", first)
    diffs += exit_diffs("first run", first, case.expect)
    outputs = {n: by_name[n].normalize_text(r.output) for n, r in first.items()}
    for pattern in case.output_contains:
        for name, text in outputs.items():
            if not re.search(pattern, text, re.M):
                diffs.append(f"first run: output of {name} lacks {pattern!r}")
    diffs += list_diff(
        "first run: rules reported failing ('Error in rule X')",
        error_rules(outputs["local"]),
        error_rules(outputs["matensemble"]),
    )
    diffs += list_diff(
        "first run: job stats tables",
        job_stats(outputs["local"]),
        job_stats(outputs["matensemble"]),
    )
    diffs += [f"after first run: {d}" for d in compare_snapshots(case, *map(snapshot, sides))]

    for number, step in enumerate(case.steps, start=2):
        (kind, value), *rest = step.items()
        if rest:
            raise ValueError(f"{case.name}: a step has one key, got {sorted(step)}")
        what = f"step {number} ({kind} {value if kind == 'shell' else ' '.join(value)})"
        if kind == "shell":
            results = both(lambda side, c=value: run_shell(case, side, c), sides)
            record(what, results)
            for name, result in results.items():
                if result.returncode != 0:
                    diffs.append(f"{what}: failed on {name}: {result.output[-2000:]}")
            continue
        args = [str(a) for a in value]
        if kind == "run":
            results = both(
                lambda side, a=args: run_snakemake(case, side, [*case.args, *a], executor=True),
                sides,
            )
            record(what, results)
            diffs += exit_diffs(what, results, run_step_expect(case))
            texts = {n: by_name[n].normalize_text(r.output) for n, r in results.items()}
            diffs += list_diff(
                f"{what}: jobs run",
                job_blocks(texts["local"], executor_neutral=True),
                job_blocks(texts["matensemble"], executor_neutral=True),
            )
            diffs += [f"after {what}: {d}" for d in compare_snapshots(case, *map(snapshot, sides))]
        elif kind in ("dryrun", "summary"):
            extra = ["--dry-run"] if kind == "dryrun" else ["--summary"]
            cores = ["--cores", str(case.cores)]
            results = forked_checks(case, sides, [*cores, *extra, *case.args, *args])
            record(what, results)
            # a failed first run may leave a workflow that cannot even be planned again
            diffs += exit_diffs(what, results, "any" if case.expect == "failure" else "success")
            texts = {n: by_name[n].normalize_text(r.output) for n, r in results.items()}
            if kind == "dryrun":
                nothing = {n: nothing_to_be_done(t) for n, t in texts.items()}
                if nothing["local"] != nothing["matensemble"]:
                    diffs.append(
                        f"{what}: 'Nothing to be done' printed with "
                        f"{'local' if nothing['local'] else 'matensemble'} only"
                    )
                diffs += list_diff(
                    f"{what}: jobs a rerun would run",
                    job_blocks(texts["local"]),
                    job_blocks(texts["matensemble"]),
                )
            else:
                diffs += list_diff(
                    f"{what}: summary rows (date dropped)",
                    summary_rows(texts["local"]),
                    summary_rows(texts["matensemble"]),
                )
        else:
            raise ValueError(f"{case.name}: unknown step kind {kind!r}")
    return without_known_differences(case, diffs), transcript


def known_texts(case: Case) -> list[str]:
    """The exact texts of the case's known differences that apply to this Snakemake."""
    from importlib.metadata import version

    from packaging.specifiers import SpecifierSet

    have = version("snakemake")
    texts = []
    for entry in case.known_differences.get("differences", []):
        if isinstance(entry, str):
            texts.append(entry.rstrip())
        elif have in SpecifierSet(entry["snakemake"]):
            texts.append(entry["text"].rstrip())
    return texts


def without_known_differences(case: Case, diffs: list[str]) -> list[str]:
    """``diffs`` less the case's known differences (each exactly, once); a known
    difference that did not occur is itself reported (fixed: remove it)."""
    left = list(diffs)
    for known in known_texts(case):
        if known in left:
            left.remove(known)
        else:
            left.append(
                f"known difference did not occur (fixed? remove it from {SPEC_NAME}):\n" + known
            )
    return left


def report(case: Case, diffs: list[str], transcript: dict[str, list[str]]) -> str:
    parts = [f"{case.name}: {len(diffs)} difference(s) between local and matensemble."]
    parts += [f"- {d}" for d in diffs]
    for name, entries in transcript.items():
        parts.append(f"\n===== {name} transcript (timestamps dropped, last lines of each) =====")
        parts += entries
    return "\n".join(parts)
