"""MPI ping-pong between ranks 0 and 1: one-way latency and bandwidth of this machine's MPI.

    mpiexec -n 2 python -m analysis.scaling_model.pingpong OUT.json

Uppercase buffer calls on preallocated arrays, as the data plane sends. Latency is half the best
round trip of an 8-byte message; bandwidth is the largest message's size over half its best round
trip (best of the repeats: the least disturbed by other processes on a shared machine)."""
from __future__ import annotations

import json
import sys
import time

import numpy as np
from mpi4py import MPI

SIZES = [8, 1 << 10, 1 << 14, 1 << 17, 1 << 20, 1 << 22, 1 << 24]
REPEATS = 30


def best_round_trip(comm: MPI.Comm, buf: np.ndarray) -> float:
    rank, best = comm.Get_rank(), float("inf")
    for _ in range(REPEATS):
        comm.Barrier()
        t0 = time.perf_counter()
        if rank == 0:
            comm.Send(buf, dest=1)
            comm.Recv(buf, source=1)
        else:
            comm.Recv(buf, source=0)
            comm.Send(buf, dest=0)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> int:
    comm = MPI.COMM_WORLD
    if comm.Get_size() != 2:
        print("run with exactly 2 ranks", file=sys.stderr)
        return 2
    one_way = {size: best_round_trip(comm, np.zeros(size, np.uint8)) / 2 for size in SIZES}
    if comm.Get_rank() == 0:
        largest = SIZES[-1]
        result = {"latency_s": one_way[8], "bandwidth_Bps": largest / (one_way[largest] - one_way[8]),
                  "one_way_s": {str(size): t for size, t in one_way.items()}}
        with open(sys.argv[1], "w") as out:
            json.dump(result, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
