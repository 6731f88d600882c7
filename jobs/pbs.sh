#!/usr/bin/env bash
# Submit: qsub -l select=2:ncpus=16:mpiprocs=16 -v CONFIG=configs/quickstart.yaml,RUN_DIR=runs/my-run jobs/pbs.sh
# Re-submitting with the same RUN_DIR resumes from the newest checkpoint there.
#PBS -N dvla_hpc
#PBS -l walltime=01:00:00
#PBS -j oe
set -euo pipefail
cd "${PBS_O_WORKDIR:-$(dirname "$0")/..}"
CONFIG=${CONFIG:-configs/quickstart.yaml}
RUN_DIR=${RUN_DIR:-runs/pbs-${PBS_JOBID:-local}}
RESUME=()
if ls "$RUN_DIR"/checkpoints/ckpt_*.pt >/dev/null 2>&1; then RESUME=(--resume "$RUN_DIR"); fi
NRANKS=$(wc -l < "${PBS_NODEFILE:-/dev/null}" || echo 4)
export MUJOCO_GL=egl OMP_NUM_THREADS=1
.venv/bin/mpiexec -n "${NRANKS:-4}" -f "${PBS_NODEFILE}" .venv/bin/python -m dvla_hpc.main \
  --config "$CONFIG" --out "$RUN_DIR" "${RESUME[@]}"
