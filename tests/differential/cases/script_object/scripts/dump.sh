#!/usr/bin/env bash
exec 2> "${snakemake_log[0]}"
echo "logging from bash" >&2
{
    echo "input: ${snakemake_input[first]} ${snakemake_input[second]} ${snakemake_input[0]}"
    echo "output: ${snakemake_output[main]}"
    echo "params: ${snakemake_params[plain]} ${snakemake_params[number]}"
    echo "wildcards: ${snakemake_wildcards[sample]}"
    echo "threads: ${snakemake[threads]}"
    echo "resources: mem_mb=${snakemake_resources[mem_mb]} tmpdir=${snakemake_resources[tmpdir]}"
    echo "log: ${snakemake_log[0]}"
    echo "config: ${snakemake_config[name]}"
    echo "rule: ${snakemake[rule]}"
} > "${snakemake_output[main]}"
