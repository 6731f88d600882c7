"""Sim ranks import no torch (no CUDA context, a fraction of the memory); the ranks that compute do."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dvla_hpc.runtime.topology import plan_layout

pytestmark = pytest.mark.mpi
SCRIPT = Path(__file__).parent / "mpi_scripts" / "check_lean_sim.py"
MPIEXEC = Path(sys.executable).parent / "mpiexec"


def test_only_the_ranks_that_compute_import_torch(tmp_path):
    ranks = 4
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PMI_", "PMIX_"))}
    done = subprocess.run(
        [str(MPIEXEC), "-n", str(ranks), sys.executable, str(SCRIPT), str(tmp_path),
         "run.total_env_steps=300", "env.envs_per_sampler=4", "learn.group_size=2",
         "learn.groups_per_update=2", "run.progress_bar=false"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    plan = plan_layout(ranks, 1, 1, [0] * ranks, [0] * ranks)
    found = {rank: (tmp_path / f"rank{rank}.txt").read_text() for rank in range(ranks)}
    assert {found[rank] for rank in plan.ranks("sim")} == {"no torch"}
    assert {found[rank] for rank in plan.ranks("infer") + plan.ranks("learn")} == {"torch"}
