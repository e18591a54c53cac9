#!/usr/bin/env bash
# matensemble-flux-start: `flux start` for the images, with the node's GPUs declared to Flux.
#
#   matensemble-flux-start [FLUX START OPTIONS] COMMAND...
#   srun --mpi=pmi2 -N N --ntasks-per-node=1 apptainer exec --nv IMAGE matensemble-flux-start snakemake ...
#
# Flux finds GPUs through hwloc's CUDA, NVML, OpenCL or RSMI backends; the hwloc of Rocky
# Linux has none of them, so in these images Flux would see no GPU and never start a GPU
# job. With GPUs on the node (MATENSEMBLE_GPUS_PER_NODE, or counted with nvidia-smi or
# rocm-smi), this writes the instance's resources as an RFC 20 R object: the cores hwloc
# finds in this task's CPU set, GPUs 0..N-1, on every node of the Slurm step (or this host
# alone), and starts the brokers with resource.path set to it. MATENSEMBLE_GPUS_PER_NODE=0
# leaves discovery to Flux.
#
# The allocation's end: inside a Slurm job, Flux learns it by asking Slurm (squeue) on rank 0.
# In a container without Slurm's client that fails, and the instance (and the plugin, which
# starts a job only if it can finish in time) would think the allocation never ends. So the
# end is handed over: MATENSEMBLE_JOB_END, in Unix seconds, set outside the container from
# Slurm (the docs' recipes do:
#   export MATENSEMBLE_JOB_END=$(date -d "$(squeue -h -j $SLURM_JOB_ID -o %e)" +%s)
# ), is written into the instance before COMMAND starts.
set -euo pipefail

gpus=${MATENSEMBLE_GPUS_PER_NODE:-}
if [ -z "$gpus" ]; then
    if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
        gpus=$(nvidia-smi -L | grep -c '^GPU ' || true)
    elif command -v rocm-smi >/dev/null && rocm-smi --showid >/dev/null 2>&1; then
        gpus=$({ rocm-smi --showid | grep -o 'GPU\[[0-9]*\]' || true; } | sort -u | wc -l)
    else
        gpus=0
    fi
fi
[[ $gpus =~ ^[0-9]+$ ]] || { echo "MATENSEMBLE_GPUS_PER_NODE='$gpus' is not a count" >&2; exit 2; }

conf=()
if [ "$gpus" -gt 0 ]; then
    # One broker per node of the step (srun --ntasks-per-node=1), else one on this host.
    hosts=$(hostname)
    if [ -n "${SLURM_STEP_NODELIST:-}" ] && [ "${SLURM_STEP_NUM_TASKS:-}" = "${SLURM_STEP_NUM_NODES:-x}" ]; then
        hosts=$SLURM_STEP_NODELIST
    fi
    cores=$(flux R encode --local | python3 -c \
        'import json, sys; print(json.load(sys.stdin)["execution"]["R_lite"][0]["children"]["core"])')
    R=${TMPDIR:-/tmp}/matensemble-R.${SLURM_JOB_ID:-$$}.json
    flux R encode --hosts="$hosts" --cores="$cores" --gpus="0-$((gpus - 1))" >"$R"
    # noverify: every node is described as this one (same cores, same GPU count).
    conf=(--conf=resource.noverify=true "--conf=resource.path=\"$R\"")
fi
# flux start's own options come first, each as one word (--test-size=2, -o,-v); the rest
# is COMMAND.
opts=()
while [ $# -gt 0 ] && [[ $1 == -* ]]; do opts+=("$1"); shift; done
end=${MATENSEMBLE_JOB_END:-}
if [ -n "$end" ]; then
    [[ $end =~ ^[0-9]+(\.[0-9]+)?$ ]] || {
        echo "MATENSEMBLE_JOB_END='$end' is not a time in Unix seconds" >&2; exit 2; }
    # Rank 0 runs the initial program: tell the resource module the end, then run COMMAND.
    update='import sys, flux; flux.Flux().rpc("resource.expiration-update", {"expiration": float(sys.argv[1])}, 0).get()'
    # shellcheck disable=SC2016 # $1, $2 and $@ are the inner bash's arguments
    exec flux start "${conf[@]}" "${opts[@]}" \
        bash -c 'flux python -c "$1" "$2" && shift 2 && exec "$@"' \
        matensemble-flux-start "$update" "$end" "$@"
fi
if [ -n "${SLURM_JOB_ID:-}" ] && ! command -v squeue >/dev/null; then
    echo "matensemble-flux-start: warning: inside Slurm job $SLURM_JOB_ID without squeue, so" \
        "Flux cannot learn when the allocation ends; set MATENSEMBLE_JOB_END outside the" \
        "container (see the comment at the top of this script)" >&2
fi
exec flux start "${conf[@]}" "${opts[@]}" "$@"
