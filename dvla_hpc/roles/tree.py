"""This rank's place in the weight-distribution tree (learner root -> switches -> nodes -> holders),
over the rank's data-plane backend. Both trees take flat torch tensors."""
from __future__ import annotations

import torch

from dvla_hpc.planes.broadcast_tree import TreeBroadcast, plan_tree
from dvla_hpc.roles.common import RankContext


class MpiTensorTree:
    """The mpi4py tree over host tensors (their numpy views; no copy)."""

    def __init__(self, tree: TreeBroadcast):
        self.tree = tree

    @property
    def in_flight(self) -> bool:
        return self.tree.in_flight

    def start(self, version: int, source: torch.Tensor) -> None:
        self.tree.start(version, source.numpy())

    def post_receive(self, into: torch.Tensor) -> None:
        self.tree.post_receive(into.numpy())

    def progress(self):
        return self.tree.progress()

    def cancel(self) -> bool:
        return self.tree.cancel()


def distribution_tree(ctx: RankContext, buffer: torch.Tensor):
    comm = ctx.comms.distribution
    world_ranks = ctx.comms.distribution_world_ranks
    members = list(range(len(world_ranks)))
    node_of = [ctx.plan.node_of[w] for w in world_ranks]
    switch_of = [ctx.plan.switch_of[w] for w in world_ranks]
    links = plan_tree(members, 0, node_of, switch_of, ctx.cfg.layout.tree_fanout)[comm.Get_rank()]
    chunk_bytes = ctx.cfg.layout.broadcast_chunk_kib * 1024
    if ctx.data_backend == "torch":
        from dvla_hpc.planes.torch_tree import TorchTreeBroadcast
        return TorchTreeBroadcast(ctx.torch_plane, world_ranks, links, buffer, chunk_bytes)
    return MpiTensorTree(TreeBroadcast(comm, links, buffer.numpy(), chunk_bytes=chunk_bytes))


def wire_device(ctx: RankContext) -> torch.device:
    """Where weights travel from and to: the compute device under torch.distributed, the host
    under mpi4py (which moves host buffers)."""
    return ctx.device if ctx.data_backend == "torch" else torch.device("cpu")
