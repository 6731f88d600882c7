"""mpiexec -n 3 check_bad_header.py MODE: rank 0 sends a corrupt header (MODE = magic, size,
short, long, crc) down a chain 0 -> 1 -> 2; rank 1 must raise BroadcastError and abort the job."""
from __future__ import annotations

import sys
import time
import zlib

import numpy as np
from mpi4py import MPI

from _common import install_abort_hooks, poll

install_abort_hooks()

from dvla_hpc.planes.broadcast_tree import TreeBroadcast, TreeLinks  # noqa: E402
from dvla_hpc.planes.tree_header import MAGIC  # noqa: E402

mode = sys.argv[1]
comm = MPI.COMM_WORLD.Dup()
rank = comm.Get_rank()
TAG, CHUNK = 100, 64 * 1024
buffer = np.ones(100_000, dtype=np.float32)


def sealed(fields: list[int]) -> np.ndarray:
    header = np.array(fields + [0], dtype=np.int64)
    header[7] = zlib.crc32(header[:7].tobytes())
    return header


if rank == 0:
    n_chunks = -(-buffer.nbytes // CHUNK)
    header = {
        "magic": np.full(8, 12345, dtype=np.int64),
        "size": sealed([MAGIC, 1, buffer.nbytes - 4, n_chunks, CHUNK, 0, 0]),
        "short": np.array([MAGIC, 1, buffer.nbytes, n_chunks], dtype=np.int64),
        "long": np.full(16, MAGIC, dtype=np.int64),
        "crc": sealed([MAGIC, 1, buffer.nbytes, n_chunks, CHUNK, 0xDEADBEEF, 0]),
    }[mode]
    requests = [comm.Isend(header, 1, TAG)]
    if mode == "crc":
        raw = buffer.view(np.uint8)
        requests += [comm.Isend(raw[k * CHUNK:(k + 1) * CHUNK], 1, TAG + 1)
                     for k in range(n_chunks)]
    poll(lambda: MPI.Request.Testall(requests), "bad header send")
    time.sleep(30)  # rank 1's abort should end the job long before this
else:
    links = TreeLinks(parent=rank - 1, children=(2,) if rank == 1 else ())
    bcast = TreeBroadcast(comm, links, np.zeros_like(buffer), chunk_bytes=CHUNK, tag_base=TAG)
    bcast.post_receive()
    poll(bcast.progress, "receive", timeout_s=30)
print(f"rank {rank}: no error raised for mode {mode}", flush=True)
