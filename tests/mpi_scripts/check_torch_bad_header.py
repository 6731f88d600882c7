"""mpiexec -n 3 check_torch_bad_header.py MODE: rank 0 sends a corrupt header (MODE = magic, size,
checksum, version) down a chain 0 -> 1 -> 2 over torch p2p; rank 1 must raise BroadcastError and
abort the job."""
from __future__ import annotations

import sys
import time
import zlib

import torch
import torch.distributed as dist
from mpi4py import MPI

from _common import install_abort_hooks, poll

install_abort_hooks()

from dvla_hpc.planes.broadcast_tree import TreeLinks  # noqa: E402
from dvla_hpc.planes.tree_header import MAGIC  # noqa: E402
from dvla_hpc.planes.torch_plane import init_torch_plane  # noqa: E402
from dvla_hpc.planes.torch_tree import TorchTreeBroadcast  # noqa: E402

mode = sys.argv[1]
world = MPI.COMM_WORLD
rank = world.Get_rank()
TAG, CHUNK, N_FLOATS = 300, 64 * 1024, 100_000
plane = init_torch_plane(world, [0, 1, 2], [0, 1, 2], [0], torch.device("cpu"), timeout_s=30)


def header(fields: list[int], seal: bool = True) -> torch.Tensor:
    h = torch.zeros(8, dtype=torch.int64)
    h[:7] = torch.tensor(fields, dtype=torch.int64)
    if seal:
        h[7] = zlib.crc32(h[:7].numpy().tobytes())
    return h


if rank == 0:
    nbytes, n_chunks = N_FLOATS * 4, -(-N_FLOATS * 4 // CHUNK)
    forged = {
        "magic": torch.full((8,), 12345, dtype=torch.int64),
        "size": header([MAGIC, 1, nbytes - 4, n_chunks, CHUNK, 0, 0]),
        "checksum": header([MAGIC, 1, nbytes, n_chunks, CHUNK, 0, 0], seal=False),
        "version": header([MAGIC, -7, nbytes, n_chunks, CHUNK, 0, 0]),
    }[mode]
    sent = dist.isend(forged, dst=1, group=plane.distribution, tag=TAG)
    sent.wait()
    time.sleep(30)  # rank 1's abort should end the job long before this
else:
    links = TreeLinks(parent=rank - 1, children=(2,) if rank == 1 else ())
    bcast = TorchTreeBroadcast(plane, [0, 1, 2], links, torch.zeros(N_FLOATS), chunk_bytes=CHUNK,
                               tag_base=TAG)
    bcast.post_receive()
    poll(bcast.progress, "receive", timeout_s=30)
print(f"rank {rank}: no error raised for mode {mode}", flush=True)
