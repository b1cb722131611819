#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the Slurm test (test/slurm/run.sh) and for trying
# the emitted scripts: munged, slurmctld and slurmd as root, every file under .cache/slurm/.
#
#   test/slurm/cluster.sh start    # idempotent: installs slurm-wlm with apt-get if absent (says so),
#                                  # writes .cache/slurm/slurm.conf, starts what is not running
#   test/slurm/cluster.sh status   # sinfo
#   test/slurm/cluster.sh stop     # stops only the daemons this script started (pid files in .cache/slurm)
#   source <(test/slurm/cluster.sh env)   # SLURM_CONF for sbatch/squeue/scancel in your shell
#
# Needs root (daemons, /etc/munge/munge.key) and, the first time, apt access to Debian's slurm-wlm.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
D="${COVIDCT_SLURM_DIR:-$ROOT/.cache/slurm}"
CONF="$D/slurm.conf"
export SLURM_CONF="$CONF"
say() { echo "[slurm] $*" >&2; }

need_root() {
  [ "$(id -u)" = 0 ] || { say "the one-node cluster runs its daemons as root: run this as root (or with sudo)."; exit 1; }
}

install_if_absent() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null && command -v sbatch >/dev/null; then return; fi
  say "slurm-wlm is not installed: installing it with apt-get (Debian package slurm-wlm: slurmctld, slurmd, munge)."
  if ! command -v apt-get >/dev/null; then say "no apt-get here: install Slurm (slurmctld, slurmd, sbatch) and munge with your package manager, then run this again."; exit 1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y slurm-wlm >/dev/null 2>&1 || {
    apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y slurm-wlm >/dev/null
  } || { say "apt-get install -y slurm-wlm failed: run it by hand (as root) and try again."; exit 1; }
}

write_conf() {
  mkdir -p "$D/state" "$D/spool" "$D/log"
  local host cpus mem
  host="$(hostname -s)"
  cpus="$(nproc)"
  # A little under MemTotal: a node that reports less memory than configured is drained.
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 95 / 100 ))
  local tmp="$CONF.tmp.$$"
  cat > "$tmp" <<CONF
# One-node cluster for covid-ct's Slurm test (written by test/slurm/cluster.sh).
ClusterName=covidct
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
SlurmctldPort=${COVIDCT_SLURMCTLD_PORT:-6817}
SlurmdPort=${COVIDCT_SLURMD_PORT:-6818}
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SlurmdParameters=config_overrides
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
JobRequeue=1
# SIGTERM first (covid-ct train then releases its run lock and keeps its checkpoint), SIGKILL after 10 s.
KillWait=10
MinJobAge=3600
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
  mv "$tmp" "$CONF"
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start() {
  need_root
  install_if_absent
  write_conf
  # munge: a key (owner munge, mode 0400) and the daemon; Debian's package creates the key, a bare system may not.
  if [ ! -s /etc/munge/munge.key ]; then
    say "creating /etc/munge/munge.key"
    mkdir -p /etc/munge && mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 2>/dev/null
    chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
  fi
  mkdir -p /run/munge /var/log/munge /var/lib/munge && chown munge:munge /run/munge /var/log/munge /var/lib/munge
  if munge -n >/dev/null 2>&1 </dev/null; then
    say "munged already running"
  else
    say "starting munged"
    runuser -u munge -- /usr/sbin/munged
    echo started > "$D/munged.ours"
  fi
  if alive "$D/slurmctld.pid"; then say "slurmctld already running"; else say "starting slurmctld"; slurmctld -f "$CONF"; echo started > "$D/slurmctld.ours"; fi
  if alive "$D/slurmd.pid"; then say "slurmd already running"; else say "starting slurmd"; slurmd -f "$CONF"; echo started > "$D/slurmd.ours"; fi
  for i in $(seq 1 60); do
    if sinfo -h -o '%t' 2>/dev/null | grep -Eq '^(idle|mix|alloc)'; then say "node up: $(sinfo -h -o '%N %c CPUs %m MiB %t')"; return 0; fi
    # A node left down or drained by an earlier session comes back once slurmd answers.
    scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
    sleep 1
  done
  say "the node did not come up in 60 s: see $D/log/slurmctld.log and $D/log/slurmd.log"; sinfo -R >&2 || true
  exit 1
}

stop() {
  need_root
  for d in slurmd slurmctld; do
    if [ -f "$D/$d.ours" ] && alive "$D/$d.pid"; then say "stopping $d"; kill "$(cat "$D/$d.pid")"; fi
    rm -f "$D/$d.ours"
  done
  if [ -f "$D/munged.ours" ]; then
    local pid; pid="$(cat /run/munge/munged.pid 2>/dev/null || true)"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then say "stopping munged"; kill "$pid"; fi
    rm -f "$D/munged.ours"
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) sinfo ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
