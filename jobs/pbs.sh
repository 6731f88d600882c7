#!/usr/bin/env bash
# Submit: qsub -l select=2:ncpus=16:mpiprocs=16 -v CONFIG=configs/quickstart.yaml,RUN_DIR=runs/my-run jobs/pbs.sh
# Re-submitting with the same RUN_DIR resumes from the newest checkpoint there. ARGS holds extra
# key=value overrides. One rank per line of $PBS_NODEFILE (-machinefile: MPICH and Open MPI both
# read it), started by .venv's MPICH mpiexec; PYTHON and MPIEXEC name the site's own instead (see
# the README, "On a cluster"). At walltime PBS sends SIGTERM: the job stops and checkpoints.
#PBS -N dvla_hpc
#PBS -l walltime=01:00:00
#PBS -j oe
set -euo pipefail
: "${PBS_NODEFILE:?run under PBS (qsub), or set PBS_NODEFILE to a file that names one host per rank}"
cd "${PBS_O_WORKDIR:-$(dirname "$0")/..}"
CONFIG=${CONFIG:-configs/quickstart.yaml}
RUN_DIR=${RUN_DIR:-runs/pbs-${PBS_JOBID:-local}}
PYTHON=${PYTHON:-.venv/bin/python}
MPIEXEC=${MPIEXEC:-.venv/bin/mpiexec}
NRANKS=$(grep -c . "$PBS_NODEFILE" || true)
if [ "$NRANKS" -lt 1 ]; then echo "pbs.sh: $PBS_NODEFILE names no host" >&2; exit 2; fi
RESUME=()
if ls "$RUN_DIR"/checkpoints/ckpt_*.pt >/dev/null 2>&1; then RESUME=(--resume "$RUN_DIR"); fi
read -ra EXTRA <<< "${ARGS:-}"
export MUJOCO_GL=egl OMP_NUM_THREADS=1
"$MPIEXEC" -n "$NRANKS" -machinefile "$PBS_NODEFILE" "$PYTHON" -m dvla_hpc.main \
  --config "$CONFIG" --out "$RUN_DIR" "${RESUME[@]}" "${EXTRA[@]}"
