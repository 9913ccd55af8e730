#!/usr/bin/env bash
# Stop the daemons .ci/slurm-up.sh started, by the pids it recorded (nothing else is touched).
set -uo pipefail
STATE=${TRAINFAIL_SLURM_STATE:-/tmp/trainfail-slurm}
for d in slurmd slurmctld munged; do
  f="$STATE/$d.pid"
  [ -f "$f" ] || continue
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  fi
  rm -f "$f"
  echo "slurm-down: stopped $d ($pid)"
done
