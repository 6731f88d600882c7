"""What carries episodes from infer ranks to learner ranks: mpi4py, each episode trimmed to its
length (the default), or torch.distributed (NCCL for CUDA tensors, gloo for CPU ones; whole slabs,
since torch p2p needs the size on both sides), as the rank context says."""
from __future__ import annotations

from dvla_hpc.planes.transport import Transport
from dvla_hpc.planes.trimmed_transport import RowTrimmedTransport
from dvla_hpc.roles.common import RankContext


def episode_transport(ctx: RankContext, peers: list[int]) -> Transport:
    if ctx.data_backend != "torch":
        return RowTrimmedTransport(ctx.comms.data, ctx.bp.episode_layout)
    from dvla_hpc.planes.torch_transport import TorchTransport
    return TorchTransport(ctx.torch_plane, peers)
