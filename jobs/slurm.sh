#!/usr/bin/env bash
# Submit: sbatch --nodes=2 --ntasks-per-node=16 jobs/slurm.sh configs/quickstart.yaml runs/my-run
# Re-submitting the same command resumes from the newest checkpoint in the run directory.
#SBATCH --job-name=dvla_hpc
#SBATCH --time=01:00:00
#SBATCH --output=%x-%j.out
set -euo pipefail
CONFIG=${1:-configs/quickstart.yaml}
RUN_DIR=${2:-runs/slurm-${SLURM_JOB_ID:-local}}
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
RESUME=()
if ls "$RUN_DIR"/checkpoints/ckpt_*.pt >/dev/null 2>&1; then RESUME=(--resume "$RUN_DIR"); fi
export MUJOCO_GL=egl OMP_NUM_THREADS=1
srun --mpi=pmi2 .venv/bin/python -m dvla_hpc.main --config "$CONFIG" --out "$RUN_DIR" "${RESUME[@]}" "${@:3}"
