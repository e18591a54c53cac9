"""tests/conftest.py: a Flux (Slurm) test that skips fails where CI installed Flux (Slurm)."""

from pathlib import Path

import pytest

CONFTEST = (Path(__file__).parents[1] / "conftest.py").read_text()
TESTS = """
import pytest

@pytest.mark.flux
def test_needs_flux():
    pytest.skip("no Flux here")

@pytest.mark.slurm
@pytest.mark.skipif(True, reason="no Slurm here")
def test_needs_slurm():
    pass

def test_plain():
    pytest.skip("unrelated")
"""


@pytest.fixture
def suite(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\nmarkers =\n    flux: f\n    slurm: s\n")
    pytester.makepyfile(test_it=TESTS)
    return pytester


def test_skips_stay_skips_where_nothing_is_required(suite, monkeypatch):
    monkeypatch.delenv("MATENSEMBLE_REQUIRE_FLUX", raising=False)
    monkeypatch.delenv("MATENSEMBLE_REQUIRE_SLURM", raising=False)
    suite.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(skipped=3)


def test_a_required_flux_test_that_skips_fails_with_its_reason(suite, monkeypatch):
    monkeypatch.setenv("MATENSEMBLE_REQUIRE_FLUX", "1")
    monkeypatch.delenv("MATENSEMBLE_REQUIRE_SLURM", raising=False)
    result = suite.runpytest_subprocess("-p", "no:cacheprovider", "-rf")
    result.assert_outcomes(failed=1, skipped=2)
    result.stdout.fnmatch_lines(["*MATENSEMBLE_REQUIRE_FLUX=1*no Flux here*"])


def test_a_required_slurm_test_that_skips_fails(suite, monkeypatch):
    monkeypatch.setenv("MATENSEMBLE_REQUIRE_SLURM", "1")
    monkeypatch.delenv("MATENSEMBLE_REQUIRE_FLUX", raising=False)
    result = suite.runpytest_subprocess("-p", "no:cacheprovider", "-rf")
    # a skipif skips at set-up, so the failure is reported as an error there
    result.assert_outcomes(errors=1, skipped=2)
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*MATENSEMBLE_REQUIRE_SLURM=1*no Slurm here*"])
