#!/usr/bin/env bash
# A throwaway single-node SLURM cluster on this machine, for testing the `slurm` backend of inforeg.launch.
#
#   scripts/slurm_cluster.sh start    install Debian's slurm-wlm and munge if missing (root + apt-get), write a
#                                     slurm.conf for this host on 127.0.0.1, start munged, slurmctld and slurmd,
#                                     wait until the node is idle; prints the SLURM_CONF line to export
#   scripts/slurm_cluster.sh stop     cancel its jobs, stop the three daemons it started, delete its folder
#   scripts/slurm_cluster.sh status   sinfo and squeue of the cluster
#
# Everything lives in one folder, $INFOREG_SLURM_DIR (default inforeg-slurm in the temporary folder): config, munge key and
# socket, spool, state, logs, pid files. Nothing is written to /etc, and a SLURM or munge already running on
# the machine is left alone (own munge socket, own ports $INFOREG_SLURM_PORT and the one after, default
# 16817). Clients (sbatch, squeue, scancel, submitit) find the cluster through SLURM_CONF=<folder>/slurm.conf.
# $INFOREG_SLURM_CPUS declares more CPUs than the machine has (to see an array's cap bind on a small machine).
# Exit status: 0 ok; 3 the tools are missing and cannot be installed here; 1 any other failure.
set -euo pipefail

dir="${INFOREG_SLURM_DIR:-$(dirname "$(mktemp -u)")/inforeg-slurm}"  # $TMPDIR, else the system default
port="${INFOREG_SLURM_PORT:-16817}"
conf="$dir/slurm.conf"
socket="$dir/munge/munge.socket"
export SLURM_CONF="$conf"

say() { echo "slurm_cluster: $*" >&2; }

alive() {  # alive PIDFILE: the process named in PIDFILE is running
  [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

install_tools() {
  local missing=()
  for tool in munged slurmctld slurmd sbatch squeue scancel sinfo; do
    command -v "$tool" >/dev/null || missing+=("$tool")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    say "missing ${missing[*]}; installing Debian's slurm-wlm and munge needs root (run as root, or install them)"
    exit 3
  fi
  if ! command -v apt-get >/dev/null; then
    say "missing ${missing[*]}; there is no apt-get here to install Debian's slurm-wlm and munge"
    exit 3
  fi
  say "installing slurm-wlm and munge with apt-get"
  local start=$SECONDS
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends slurm-wlm munge >"$dir/apt.log" 2>&1; then
    apt-get update -q >>"$dir/apt.log" 2>&1 || true
    apt-get install -y -q --no-install-recommends slurm-wlm munge >>"$dir/apt.log" 2>&1 \
      || { tail -20 "$dir/apt.log" >&2; say "apt-get could not install slurm-wlm and munge ($dir/apt.log)"; exit 3; }
  fi
  say "installed in $((SECONDS - start)) s"
}

write_conf() {
  local host cpus mem
  host="$(hostname -s)"
  cpus="${INFOREG_SLURM_CPUS:-$(nproc)}"
  mem="$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)"
  cat >"$conf" <<EOF
# Written by scripts/slurm_cluster.sh: one node, this host, on the loopback address.
ClusterName=inforeg-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
SlurmdTimeout=60
KillWait=2
MaxArraySize=10001
$( [ "$cpus" -gt "$(nproc)" ] && printf '%s\n%s' "# more CPUs declared than the machine has" \
    "SlurmdParameters=config_overrides" )
NodeName=$host NodeHostname=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

start() {
  mkdir -p "$dir"
  if alive "$dir/slurmctld.pid" && alive "$dir/slurmd.pid"; then
    say "already running (SLURM_CONF=$conf)"
    echo "SLURM_CONF=$conf"
    return 0
  fi
  install_tools
  if [ "$(id -u)" -ne 0 ]; then
    say "starting slurmd needs root"
    exit 3
  fi
  mkdir -p "$dir/munge" "$dir/state" "$dir/spool"
  chmod 700 "$dir/munge"
  if ! alive "$dir/munge/munged.pid"; then
    if [ ! -f "$dir/munge/munge.key" ]; then
      head -c 1024 /dev/urandom >"$dir/munge/munge.key"
      chmod 600 "$dir/munge/munge.key"
    fi
    munged --force --key-file "$dir/munge/munge.key" --socket "$socket" --pid-file "$dir/munge/munged.pid" \
      --log-file "$dir/munge/munged.log" --seed-file "$dir/munge/munged.seed"
  fi
  munge -S "$socket" -n | unmunge -S "$socket" >/dev/null \
    || { say "munged does not answer on $socket (log: $dir/munge/munged.log)"; exit 1; }
  write_conf
  slurmctld -c -f "$conf"
  slurmd -f "$conf" -N "$(hostname -s)"
  local state=""
  for _ in $(seq 120); do
    state="$(sinfo -h -N -o %t 2>/dev/null | head -1 || true)"
    [ "$state" = "idle" ] && break
    sleep 0.5
  done
  if [ "$state" != "idle" ]; then
    say "the node did not become idle within 60 s (state: '${state:-no answer}'); the last log lines:"
    tail -n 15 "$dir/slurmctld.log" "$dir/slurmd.log" >&2 || true
    stop
    exit 1
  fi
  say "cluster up: node $(hostname -s) idle with $(sinfo -h -N -o %c | head -1) CPUs, slurmctld on 127.0.0.1:$port"
  echo "SLURM_CONF=$conf"
}

stop_daemon() {  # stop_daemon NAME PIDFILE
  alive "$2" || return 0
  local pid
  pid="$(cat "$2")"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.25; done
  say "$1 ($pid) did not stop on SIGTERM; killing it"
  kill -9 "$pid" 2>/dev/null || true
}

stop() {
  [ -d "$dir" ] || { say "nothing to stop ($dir does not exist)"; return 0; }
  if alive "$dir/slurmctld.pid"; then
    scancel --full --quiet --partition=debug 2>/dev/null || true
    for _ in $(seq 40); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.25; done
  fi
  stop_daemon slurmd "$dir/slurmd.pid"
  stop_daemon slurmctld "$dir/slurmctld.pid"
  stop_daemon munged "$dir/munge/munged.pid"
  rm -rf "$dir"
  say "stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) sinfo; squeue ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
