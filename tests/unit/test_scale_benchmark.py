"""benchmarks/scale.py ``--compare``: a run that exits otherwise than expected
stops the benchmark (non-zero, naming the command and its stderr) instead of
printing figures measured on a failed run. Tiny sizes, real snakemake runs."""

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def scale():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import scale
    finally:
        sys.path.remove(str(BENCHMARKS))
    return scale


#: fails only when Snakemake is asked for a dry run (the measured runs succeed)
FAILING_DRY_RUN = (
    'import sys\nif "--dry-run" in sys.argv: raise ValueError("planted: no dry run")\n'
)

#: the 3-job run (the base run below) has a failing job it does not expect
FAILING_BASE_RUN = "\nif N == 3: FAIL = {{0}}\n"


def _planted(snakefile: str, prefix: str = "", after_fail: str = "") -> str:
    head, sep, rest = snakefile.partition("\nrule all:")
    return prefix + head + after_fail + sep + rest


def test_compare_stops_when_a_dry_run_fails(scale, monkeypatch, capsys):
    monkeypatch.setattr(scale, "SNAKEFILE", _planted(scale.SNAKEFILE, prefix=FAILING_DRY_RUN))
    with pytest.raises(SystemExit) as stopped:
        scale.compare(2, 3, 5, (), base_jobs=2)
    message = str(stopped.value.code)
    assert "the dry run of the 2-job DAG exited 1, expected 0" in message, message
    assert "command: snakemake --quiet all --dry-run" in message, message
    assert "planted: no dry run" in message, message
    assert "| jobs" not in capsys.readouterr().out  # no figures printed


def test_compare_stops_when_the_base_run_fails(scale, monkeypatch, capsys):
    monkeypatch.setattr(scale, "SNAKEFILE", _planted(scale.SNAKEFILE, after_fail=FAILING_BASE_RUN))
    with pytest.raises(SystemExit) as stopped:
        scale.compare(2, 4, 5, (), base_jobs=3)
    message = str(stopped.value.code)
    assert "the 3-job run" in message, message
    assert "exited 1, expected 0" in message, message
    assert "command: snakemake --quiet all -j unlimited --executor matensemble" in message, message
    assert "| jobs" not in capsys.readouterr().out
