"""The pause after which a file touched next has a later mtime, measured where
the outputs are written."""

from __future__ import annotations

import os
import time

from snakemake_executor_plugin_matensemble.snakemake_boundary import timestamps
from snakemake_executor_plugin_matensemble.snakemake_boundary.timestamps import (
    SNAKEMAKE_LEVEL_PAUSE,
    level_pause,
    shortest_distinct_pause,
)


def test_the_pause_is_measured_and_leaves_no_file(tmp_path):
    pause = shortest_distinct_pause(str(tmp_path))
    assert pause is not None
    assert 0 < pause < SNAKEMAKE_LEVEL_PAUSE
    assert os.listdir(tmp_path) == []


def test_files_touched_a_level_pause_apart_have_distinct_mtimes(tmp_path):
    pause = level_pause(str(tmp_path))
    assert pause <= SNAKEMAKE_LEVEL_PAUSE
    for trial in range(20):
        first, second = tmp_path / f"{trial}-level0", tmp_path / f"{trial}-level1"
        first.touch()
        second.touch()
        os.utime(first)
        time.sleep(pause)
        os.utime(second)
        assert second.stat().st_mtime_ns > first.stat().st_mtime_ns, trial


def test_an_unwritable_directory_keeps_snakemakes_pause(tmp_path):
    missing = str(tmp_path / "missing")
    assert shortest_distinct_pause(missing) is None
    assert level_pause(missing) == SNAKEMAKE_LEVEL_PAUSE


def test_a_coarse_clock_keeps_snakemakes_pause(tmp_path, monkeypatch):
    class Frozen:  # every file stamped alike, however long the pause
        def __init__(self, path):
            self.st_mtime_ns = 1_000_000_000

    monkeypatch.setattr(timestamps.os, "stat", Frozen)
    assert shortest_distinct_pause(str(tmp_path)) is None
    assert level_pause(str(tmp_path)) == SNAKEMAKE_LEVEL_PAUSE


def test_the_pause_is_twice_the_shortest_that_worked(tmp_path, monkeypatch):
    monkeypatch.setattr(timestamps, "shortest_distinct_pause", lambda directory: 0.004)
    assert level_pause(str(tmp_path)) == 0.008
    monkeypatch.setattr(timestamps, "shortest_distinct_pause", lambda directory: 0.05)
    assert level_pause(str(tmp_path)) == SNAKEMAKE_LEVEL_PAUSE
