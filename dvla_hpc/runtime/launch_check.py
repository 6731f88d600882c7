"""mpiexec and mpi4py must belong to one MPI. When they do not, each process the launcher starts
comes up as a singleton of size 1, and N singletons would train N copies into one run directory."""
from __future__ import annotations

import os
import sys
from collections.abc import Mapping

LAUNCHER_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")  # MPICH/Hydra and Slurm PMI; Open MPI


def launcher_mismatch(world_size: int, library: str, environ: Mapping[str, str] = os.environ) -> str | None:
    """Why this process's MPI world disagrees with the launcher that started it, or None."""
    for variable in LAUNCHER_SIZE_VARIABLES:
        value = environ.get(variable, "")
        if value.isdigit() and int(value) != world_size:
            return (f"the launcher started {value} processes ({variable}={value}) but MPI.COMM_WORLD has "
                    f"{world_size}: mpi4py loaded another MPI library ({library.splitlines()[0].strip()}) "
                    "than the one whose mpiexec started the job. Launch with the mpiexec of mpi4py's MPI, "
                    "or point MPI4PY_LIBMPI at the launcher's libmpi")
    return None


def join_world():
    """MPI.COMM_WORLD, with the hook that aborts the whole job on an unhandled error where there
    are several ranks; or None, after saying why, when the launcher and mpi4py are not one MPI."""
    from mpi4py import MPI

    from dvla_hpc.runtime.signals import abort_on_unhandled_error
    world = MPI.COMM_WORLD
    if mismatch := launcher_mismatch(world.Get_size(), MPI.Get_library_version()):
        print(f"launch error: {mismatch}", file=sys.stderr)
        return None
    if world.Get_size() > 1:
        abort_on_unhandled_error(world)
    return world
