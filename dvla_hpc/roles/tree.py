"""This rank's place in the weight-distribution tree (learner root -> switches -> nodes -> holders)."""
from __future__ import annotations

import numpy as np

from dvla_hpc.planes.broadcast_tree import TreeBroadcast, plan_tree
from dvla_hpc.roles.common import RankContext


def distribution_tree(ctx: RankContext, buffer: np.ndarray) -> TreeBroadcast:
    comm = ctx.comms.distribution
    world_ranks = ctx.comms.distribution_world_ranks
    members = list(range(len(world_ranks)))
    node_of = [ctx.plan.node_of[w] for w in world_ranks]
    switch_of = [ctx.plan.switch_of[w] for w in world_ranks]
    links = plan_tree(members, 0, node_of, switch_of)[comm.Get_rank()]
    return TreeBroadcast(comm, links, buffer, chunk_bytes=ctx.cfg.layout.broadcast_chunk_kib * 1024)
