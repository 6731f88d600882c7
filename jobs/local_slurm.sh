#!/usr/bin/env bash
# A one-machine SLURM cluster for trying the job scripts (Debian's slurm-wlm and munge, as root):
#   jobs/local_slurm.sh start [STATE_DIR] [CPUS]   # prints the SLURM_CONF to export
#   SLURM_CONF=STATE_DIR/slurm.conf sbatch --ntasks=4 jobs/slurm.sh configs/quickstart.yaml runs/x
#   jobs/local_slurm.sh stop [STATE_DIR]
# The node offers CPUS slots (default 8) whatever the core count, so several ranks fit on a laptop.
set -euo pipefail
ACTION=${1:?usage: jobs/local_slurm.sh start|stop [STATE_DIR] [CPUS]}
DIR=$(realpath -m "${2:-/tmp/dvla-slurm}")
CPUS=${3:-8}
CONF=$DIR/slurm.conf
# munged runs as the munge user: its socket lives where that user can reach, whatever DIR's mode
MUNGE_DIR=/tmp/dvla-munge-$(printf %s "$DIR" | md5sum | cut -c1-8)

stop() {
  for daemon in slurmd slurmctld munged; do
    if [ -f "$DIR/$daemon.pid" ]; then kill "$(cat "$DIR/$daemon.pid")" 2>/dev/null || true; fi
  done
  sleep 1
  rm -f "$DIR"/*.pid
  rm -rf "$MUNGE_DIR"
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: poll until COMMAND succeeds
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then echo "local_slurm: $what did not come up; see $DIR/*.log" >&2; exit 1; fi
    sleep 0.5
  done
}

start() {
  for tool in munged slurmctld slurmd sinfo; do
    command -v "$tool" >/dev/null || { echo "local_slurm: $tool not found (apt-get install slurm-wlm munge)" >&2; exit 1; }
  done
  stop
  mkdir -p "$DIR/state" "$DIR/spool" "$MUNGE_DIR"
  chown munge:munge "$MUNGE_DIR"
  local host memory_mb first_job_id
  host=$(hostname -s)
  # Job ids that no earlier local cluster used: MPICH names a step's /dev/shm segment after its
  # job id, and a segment a killed job left behind hangs a later job with that id in MPI_Init.
  first_job_id=$(( $(date +%s) % 6000000 * 10 + 1 ))
  memory_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))
  cat > "$CONF" <<EOF
ClusterName=dvla-local
FirstJobId=$first_job_id
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_DIR/munge.socket
SlurmctldPort=16817
SlurmdPort=16818
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
NodeName=$host CPUs=$CPUS RealMemory=$memory_mb State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  runuser -u munge -- munged --socket="$MUNGE_DIR/munge.socket" --pid-file="$MUNGE_DIR/munged.pid" \
    --log-file="$MUNGE_DIR/munged.log" --seed-file="$MUNGE_DIR/munged.seed" --force
  cp "$MUNGE_DIR/munged.pid" "$DIR/munged.pid"
  SLURM_CONF=$CONF slurmctld -f "$CONF"
  SLURM_CONF=$CONF slurmd -f "$CONF"
  wait_for 30 "the node" bash -c "SLURM_CONF='$CONF' sinfo -h -o %T | grep -Eq '^(idle|mixed|allocated)'"
  echo "export SLURM_CONF=$CONF"
}

case $ACTION in
  start) start ;;
  stop) stop ;;
  *) echo "usage: jobs/local_slurm.sh start|stop [STATE_DIR] [CPUS]" >&2; exit 2 ;;
esac
