#!/usr/bin/env bash
# A real one-node SLURM cluster on 127.0.0.1 for tests/test_slurm.py: Debian's slurm-wlm + munge,
# no cgroups, no accounting. Daemons run in the foreground (-D / --foreground) in the background of
# this script; their pids go to $STATE/*.pid so .ci/slurm-down.sh stops exactly them.
# Needs root (it writes /etc/slurm/slurm.conf and starts daemons). Idempotent: a running cluster
# started by this script is reused.
set -euo pipefail
STATE=${TRAINFAIL_SLURM_STATE:-/tmp/trainfail-slurm}
mkdir -p "$STATE"

if [ "$(id -u)" != 0 ]; then echo "slurm-up: must run as root" >&2; exit 1; fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurm-wlm munge >"$STATE/apt.log" 2>&1 \
    || { cat "$STATE/apt.log" >&2; exit 1; }
fi

alive() { [ -f "$STATE/$1.pid" ] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

# munge: a key, then munged as the munge user.
if [ ! -s /etc/munge/munge.key ]; then
  mkdir -p /etc/munge
  (command -v mungekey >/dev/null && mungekey --create --force) \
    || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
fi
mkdir -p /run/munge /var/lib/munge /var/log/munge
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
chmod 0700 /etc/munge; chmod 0400 /etc/munge/munge.key; chmod 0755 /run/munge
if ! alive munged; then
  runuser -u munge -- /usr/sbin/munged --foreground >"$STATE/munged.log" 2>&1 &
  echo $! >"$STATE/munged.pid"
fi
for _ in $(seq 50); do { munge -n </dev/null | unmunge; } >/dev/null 2>&1 && break; sleep 0.2; done
munge -n </dev/null | unmunge >/dev/null || { echo "slurm-up: munged does not answer" >&2; cat "$STATE/munged.log" >&2; exit 1; }

# slurm.conf: this machine's real CPUs and memory (slurmd -C), one node on 127.0.0.1.
NODE=$(hostname -s)
HW=$(slurmd -C | head -1 | sed -E 's/^NodeName=[^ ]+ //; s/ *$//')
MEM=$(echo "$HW" | sed -E 's/.*RealMemory=([0-9]+).*/\1/')
HW=$(echo "$HW" | sed -E "s/RealMemory=[0-9]+/RealMemory=$((MEM * 9 / 10))/")  # leave the OS some
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
cat >/etc/slurm/slurm.conf <<CONF
# Written by trainfail's .ci/slurm-up.sh: one node, no cgroups, no accounting.
ClusterName=trainfail
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$STATE/slurmctld.daemon.pid
SlurmdPidFile=$STATE/slurmd.daemon.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# Finished jobs stay visible to squeue for 10 minutes: the executor plugin polls with squeue
# when accounting is off, and needs MinJobAge >= 3 x its first status-check delay.
MinJobAge=600
MpiDefault=none
NodeName=$NODE NodeAddr=127.0.0.1 $HW State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF
echo "" >/etc/slurm/cgroup.conf  # not used (no cgroup plugins), but some tools look for it

if ! alive slurmctld; then
  /usr/sbin/slurmctld -D -i >"$STATE/slurmctld.out" 2>&1 &
  echo $! >"$STATE/slurmctld.pid"
fi
if ! alive slurmd; then
  /usr/sbin/slurmd -D -N "$NODE" >"$STATE/slurmd.out" 2>&1 &
  echo $! >"$STATE/slurmd.pid"
fi

for _ in $(seq 60); do
  state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
  case "$state" in idle*|mixed*|allocated*) break ;; esac
  [ "$state" = "down" ] || [ "$state" = "down*" ] && scontrol update nodename="$NODE" state=resume 2>/dev/null || true
  sleep 1
done
state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
case "$state" in
  idle*|mixed*|allocated*) echo "slurm-up: node $NODE is $state (state in $STATE)";;
  *) echo "slurm-up: node $NODE did not come up (state: '$state')" >&2
     tail -20 "$STATE/slurmctld.log" "$STATE/slurmd.log" "$STATE/slurmctld.out" "$STATE/slurmd.out" >&2 || true
     exit 1;;
esac
