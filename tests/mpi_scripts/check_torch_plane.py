"""mpiexec -n 4 check_torch_plane.py: world ranks 3, 0, 1 form a torch plane in that torch-rank
order; rank 2 stays out and must never initialise torch.distributed. Every member then leaves
receives posted that nobody sends to: shutdown must match them, quickly, and the job exit cleanly."""
from __future__ import annotations

import time

import torch
import torch.distributed as dist
from mpi4py import MPI

from _common import install_abort_hooks

install_abort_hooks()

from dvla_hpc.planes import torch_plane  # noqa: E402
from dvla_hpc.planes.torch_plane import WorkStream, init_torch_plane  # noqa: E402

world = MPI.COMM_WORLD
rank = world.Get_rank()
MEMBERS, DISTRIBUTION, LEARNERS = [3, 0, 1], [3, 1], [3, 0]

plane = init_torch_plane(world, MEMBERS, DISTRIBUTION, LEARNERS, torch.device("cpu"), timeout_s=30)
if rank not in MEMBERS:
    assert plane is None, f"rank {rank}: outside the plane but got {plane}"
    assert not dist.is_initialized(), f"rank {rank}: torch.distributed initialised outside the plane"
else:
    assert plane.backend == "gloo" and plane.members == MEMBERS, plane
    assert dist.get_rank() == MEMBERS.index(rank) == plane.torch_rank(rank) == plane.rank
    assert dist.get_world_size() == len(MEMBERS)
    for name, group, ranks in (("distribution", plane.distribution, DISTRIBUTION),
                               ("learners", plane.learners, LEARNERS)):
        assert (group is not None) == (rank in ranks), f"rank {rank}: {name} group is {group}"
        if group is not None:
            total = torch.tensor([float(rank)])
            dist.all_reduce(total, group=group)
            assert total.item() == sum(ranks), f"rank {rank}: {name} allreduce gave {total.item()}"
    never_sent = WorkStream(plane, "receives nobody sends to")
    landing = torch.zeros(4096, dtype=torch.uint8)
    plane.irecv(landing, MEMBERS[(MEMBERS.index(rank) + 1) % len(MEMBERS)], 77, never_sent)
    if rank in DISTRIBUTION:
        other = DISTRIBUTION[1 - DISTRIBUTION.index(rank)]
        plane.irecv(landing, other, 78, never_sent, torch_plane.DISTRIBUTION)
        plane.irecv(landing, other, 78, never_sent, torch_plane.DISTRIBUTION)
    began = time.monotonic()
    plane.shutdown(timeout_s=20)
    assert time.monotonic() - began < 5, f"rank {rank}: shutdown took {time.monotonic() - began:.1f}s"
    assert never_sent.idle(), f"rank {rank}: {never_sent.pending} receives left posted"
    assert not dist.is_initialized(), f"rank {rank}: torch.distributed still initialised"
world.Barrier()
if rank == 0:
    print(f"torch plane OK: members {MEMBERS}, rank 2 left out", flush=True)
