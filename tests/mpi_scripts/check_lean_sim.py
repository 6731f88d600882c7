"""mpiexec -n 3 check_lean_sim.py OUT [key=value ...]: run a small job and report, per rank, whether
it imported torch (OUT/rank<r>.txt holds "torch" or "no torch")."""
from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":  # env workers are spawned: they re-import this file and must not run it
    from mpi4py import MPI

    from dvla_hpc.main import main

    out = Path(sys.argv[1])
    code = main(["--out", str(out / "run"), *sys.argv[2:]])
    (out / f"rank{MPI.COMM_WORLD.Get_rank()}.txt").write_text("torch" if "torch" in sys.modules else "no torch")
    sys.exit(code)
