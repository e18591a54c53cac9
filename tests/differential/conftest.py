"""The case directories hold workflows (and their scripts), not tests."""

collect_ignore_glob = ["cases/*", "snakemake_tests/*"]
