"""How long to wait so that a file touched next has a later mtime.

Snakemake post-processes a group job level by level (toposort order) and
touches each level's outputs, pausing 0.1 s between levels "to ensure that
subsequent levels really have distinct modification times". Any pause longer
than one step of the clock that stamps files gives that guarantee; where that
clock is fine (a kernel tick of a few milliseconds on ext4, XFS, tmpfs, and most
parallel file systems) that is far shorter than 0.1 s, which a chain of ten
rules in a group pays nine times, in Snakemake's scheduler thread.

:func:`shortest_distinct_pause` measures it where the outputs are written: it
touches one file, waits, touches another, and compares their mtimes.
"""

from __future__ import annotations

import os
import tempfile
import time

#: Snakemake's own pause between the levels of a group job (seconds).
SNAKEMAKE_LEVEL_PAUSE = 0.1
#: Pauses tried, shortest first (seconds).
_TRIED = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05)


def shortest_distinct_pause(directory: str, trials: int = 3) -> float | None:
    """The shortest pause of :data:`_TRIED` after which a file touched second
    had a strictly later mtime than one touched first, in each of ``trials``.

    None when no such pause was found (a coarse clock: Snakemake's own pause is
    as good as any) or ``directory`` cannot be written.
    """
    try:
        with tempfile.TemporaryDirectory(prefix=".matensemble-mtime-", dir=directory) as scratch:
            for pause in _TRIED:
                if all(_later_after(scratch, pause, trial) for trial in range(trials)):
                    return pause
    except OSError:
        pass
    return None


def _later_after(scratch: str, pause: float, trial: int) -> bool:
    first, second = (os.path.join(scratch, f"{pause}-{trial}-{name}") for name in "ab")
    for path in (first, second):
        with open(path, "w"):
            pass
    # neither file is looked at before it is touched: the kernel may then stamp
    # it with its coarse clock (multigrain timestamps), the worst case
    os.utime(first)
    time.sleep(pause)
    os.utime(second)
    return os.stat(second).st_mtime_ns > os.stat(first).st_mtime_ns


def level_pause(directory: str) -> float:
    """A pause between a group job's levels that still gives them distinct mtimes.

    Twice the shortest pause measured (margin for a tick that came early in a
    trial), never more than Snakemake's own 0.1 s, which is kept where nothing
    shorter works.
    """
    pause = shortest_distinct_pause(directory)
    if pause is None:
        return SNAKEMAKE_LEVEL_PAUSE
    return min(SNAKEMAKE_LEVEL_PAUSE, 2 * pause)
