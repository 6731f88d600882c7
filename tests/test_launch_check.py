"""A launcher whose MPI is not mpi4py's starts N singletons: every entry point refuses that."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dvla_hpc.runtime.launch_check import launcher_mismatch

LIBRARY = "MPICH Version:      5.0.2\nMPICH Release date: ..."


def test_a_world_the_launcher_agrees_with_passes():
    assert launcher_mismatch(1, LIBRARY, {}) is None  # started without a launcher
    assert launcher_mismatch(4, LIBRARY, {"PMI_SIZE": "4"}) is None
    assert launcher_mismatch(8, LIBRARY, {"OMPI_COMM_WORLD_SIZE": "8"}) is None


@pytest.mark.parametrize("variable", ["PMI_SIZE", "OMPI_COMM_WORLD_SIZE"])
def test_singletons_under_a_foreign_launcher_are_named(variable):
    problem = launcher_mismatch(1, LIBRARY, {variable: "4"})
    assert f"{variable}=4" in problem and "COMM_WORLD has 1" in problem
    assert "MPICH Version:      5.0.2" in problem and "MPI4PY_LIBMPI" in problem


@pytest.mark.parametrize("module, args", [("dvla_hpc.main", []),
                                          ("dvla_hpc.eval", ["--checkpoint", "missing.pt"])])
def test_entry_points_refuse_a_mismatched_launch_with_exit_code_2(module, args, tmp_path):
    done = subprocess.run([sys.executable, "-m", module, *args, "--out", str(tmp_path / "run")],
                          env={**os.environ, "PMI_SIZE": "3"}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "launch error: the launcher started 3 processes (PMI_SIZE=3)" in done.stderr
    assert not (tmp_path / "run").exists()  # refused before any run directory is made
