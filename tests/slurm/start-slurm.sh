#!/usr/bin/env bash
# Start a real one-node Slurm cluster on this machine for tests/slurm (Debian's slurm-wlm and
# munge; installs them with apt-get when they are missing). Needs root. Idempotent: a cluster
# that already answers is left as it is. The node is this host with all its CPUs, partition
# "debug", MpiDefault none (tests pass --mpi=pmi2 as the docs do); up to 4 jobs share each core
# (OverSubscribe=FORCE:4), so that the campaign tests (tests/slurm/test_campaign.py) run side by
# side on a 2-CPU machine. Prints `sinfo` at the end.
#
#   bash tests/slurm/start-slurm.sh          # then: salloc -N1 -t 2 srun --mpi=pmi2 ... flux start ...
set -euo pipefail
if sinfo -h -o %t 2>/dev/null | grep -q idle; then sinfo; exit 0; fi
[ "$(id -u)" = 0 ] || { echo "start-slurm.sh: needs root (slurmctld, slurmd, munged)" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi
host=$(hostname -s); cpus=$(nproc)
mem=$(awk '/MemTotal/ {print int($2/1024) - 512}' /proc/meminfo)
# State of its own: a machine image may keep another cluster's state in /var/spool/slurmctld
# (slurmctld refuses to start on a cluster-name mismatch there).
state=/var/spool/matensemble-slurm
mkdir -p /etc/slurm $state/ctld $state/d /var/log/slurm /run/munge
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=matensemble-test
SlurmctldHost=$host
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/d
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmUser=root
ReturnToService=2
MpiDefault=none
KillWait=5
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
[ -s /etc/munge/munge.key ] || mungekey -c 2>/dev/null || /usr/sbin/create-munge-key -f
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
pgrep -x munged >/dev/null || su -s /bin/sh munge -c /usr/sbin/munged
pgrep -x slurmctld >/dev/null || slurmctld || { tail -5 /var/log/slurm/slurmctld.log >&2; exit 1; }
pgrep -x slurmd >/dev/null || slurmd || { tail -5 /var/log/slurm/slurmd.log >&2; exit 1; }
for _ in $(seq 60); do sinfo -h -o %t 2>/dev/null | grep -q idle && break; sleep 1; done
sinfo -h -o %t | grep -q idle || { echo "start-slurm.sh: the node did not become idle" >&2; sinfo >&2; tail -5 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2; exit 1; }
sinfo
