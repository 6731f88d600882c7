"""What carries episodes from infer ranks to learner ranks: mpi4py (the pump's default) or
torch.distributed (NCCL for CUDA tensors, gloo for CPU ones), as the rank context says."""
from __future__ import annotations

from dvla_hpc.roles.common import RankContext


def episode_transport(ctx: RankContext, peers: list[int]):
    """None means the pump's own mpi4py transport."""
    if ctx.data_backend != "torch":
        return None
    from dvla_hpc.planes.transport import TorchTransport
    return TorchTransport(ctx.torch_plane, peers)
