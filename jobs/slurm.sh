#!/usr/bin/env bash
# Submit: sbatch --nodes=2 --ntasks-per-node=16 jobs/slurm.sh configs/quickstart.yaml runs/my-run [key=value ...]
# Re-submitting the same command resumes from the newest checkpoint in the run directory. At its time
# limit (or on scancel) SLURM sends SIGTERM: the job stops, writes a checkpoint, and exits; it has
# KillWait (30 s by default) for that before SIGKILL, so large models want `sbatch --signal=TERM@300`.
# PYTHON: the interpreter whose mpi4py runs the job (default: .venv's, built on the MPICH wheel,
# which talks PMI-2). With mpi4py built against the site's MPI, set SRUN_MPI to the PMI that MPI
# speaks (`srun --mpi=list`), e.g. SRUN_MPI=pmix. See the README, "On a cluster".
#SBATCH --job-name=dvla_hpc
#SBATCH --time=01:00:00
#SBATCH --output=%x-%j.out
set -euo pipefail
CONFIG=${1:-configs/quickstart.yaml}
RUN_DIR=${2:-runs/slurm-${SLURM_JOB_ID:-local}}
PYTHON=${PYTHON:-.venv/bin/python}
SRUN_MPI=${SRUN_MPI:-pmi2}
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
RESUME=()
if ls "$RUN_DIR"/checkpoints/ckpt_*.pt >/dev/null 2>&1; then RESUME=(--resume "$RUN_DIR"); fi
export MUJOCO_GL=egl OMP_NUM_THREADS=1
srun --mpi="$SRUN_MPI" "$PYTHON" -m dvla_hpc.main --config "$CONFIG" --out "$RUN_DIR" "${RESUME[@]}" "${@:3}"
