#!/usr/bin/env bash
# A real single-node SLURM on this machine (Debian's slurm-wlm + munge), for the sweep's array jobs:
#
#   sudo apt-get install -y slurmctld slurmd slurm-client munge      # once (Debian 12: SLURM 22.05)
#   bash tools/slurm_single_node.sh start      # munged, slurmctld, slurmd; prints the SLURM_CONF to export
#   export SLURM_CONF=/tmp/llava_df_slurm/slurm.conf
#   sinfo; llava-df compare --quick --executor slurm --time_min 30 --gpus_per_task 0
#   bash tools/slurm_single_node.sh stop       # stops the three daemons this script started
#
# Built for a container or VM without systemd (no unit files are used) and without cgroup delegation:
# processes are tracked by their parent pids (proctrack/linuxproc), tasks are not confined (task/none),
# so --cpus-per-task and --mem are accounted by the scheduler but not enforced by the kernel. No
# accounting database (slurmdbd): jobs completed are remembered for MinJobAge seconds only, which
# is all `sacct`-free job watching (submitit's result files) needs. Must run as root (munge's key,
# slurmd starting jobs as their submitter). Everything lives in $LLAVA_DF_SLURM_DIR (default
# /tmp/llava_df_slurm): the config, state, logs and pid files.
set -euo pipefail

DIR=${LLAVA_DF_SLURM_DIR:-/tmp/llava_df_slurm}
CONF=$DIR/slurm.conf
HOST=$(hostname -s)

need() { command -v "$1" >/dev/null || { echo "error: $1 not found: sudo apt-get install -y slurmctld slurmd slurm-client munge" >&2; exit 1; }; }

write_conf() {
  mkdir -p "$DIR"/{state,spool,log}
  local cpus mem
  cpus=$(nproc)
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))  # MiB, 1 GiB left to the system
  cat > "$CONF" <<EOF
# Written by tools/slurm_single_node.sh: one node, one partition, no accounting database.
ClusterName=llava_df_single
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge=3600
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
NodeName=$HOST CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

start() {
  for cmd in munged slurmctld slurmd sinfo; do need "$cmd"; done
  [ "$(id -u)" = 0 ] || { echo "error: run as root (munge's key, slurmd starts jobs as their user)" >&2; exit 1; }
  write_conf
  if ! pgrep -x munged >/dev/null; then
    mkdir -p /run/munge && chown munge:munge /run/munge
    runuser -u munge -- /usr/sbin/munged
  fi
  munge -n | unmunge >/dev/null || { echo "error: munge does not authenticate (see /var/log/munge)" >&2; exit 1; }
  SLURM_CONF=$CONF slurmctld -f "$CONF"
  SLURM_CONF=$CONF slurmd -f "$CONF"
  for _ in $(seq 30); do
    if SLURM_CONF=$CONF sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
      SLURM_CONF=$CONF sinfo
      echo "SLURM is up: export SLURM_CONF=$CONF"
      return 0
    fi
    sleep 1
  done
  echo "error: the node did not come up in 30 s; logs: $DIR/log/" >&2
  SLURM_CONF=$CONF sinfo -R >&2 || true
  tail -n 20 "$DIR"/log/*.log >&2 || true
  exit 1
}

stop() {
  for pid in "$DIR/slurmd.pid" "$DIR/slurmctld.pid"; do
    [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true
  done
  echo "stopped slurmd and slurmctld (munged is left running: other programs may use it)"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  conf) write_conf; echo "$CONF" ;;
  *) echo "usage: bash tools/slurm_single_node.sh start|stop|conf" >&2; exit 2 ;;
esac
