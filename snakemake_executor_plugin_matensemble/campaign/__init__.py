"""Campaigns: one submission runs a workflow to its end, allocation after allocation.

``matensemble-submit`` (:mod:`.cli`) writes one batch script (:mod:`.script`) from
the profile's machine recipe (:mod:`.recipes`) and submits it (:mod:`.schedulers`:
Slurm, Flux). Every allocation runs that script: it queues the next allocation
with a dependency on itself, runs Snakemake with ``--rerun-incomplete``, then
reads the run-end record (:mod:`..run_end`) and lets the next allocation run or
cancels it (:mod:`.steps`). The campaign's state (:mod:`.state`) records every
allocation, under a lock.
"""
