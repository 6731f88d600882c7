"""An infer rank: serves its sim ranks' observations, sends each finished episode to the learner
replica that trains its group, and receives weights down the broadcast tree."""
from __future__ import annotations

from dvla_hpc.lanes.distribute import TreeReceiveLane
from dvla_hpc.lanes.sample import learner_for_group
from dvla_hpc.memory.accounting import DATA_PATH
from dvla_hpc.memory.layouts import H, SlabKind
from dvla_hpc.roles.common import ACTION_TAG, EPISODE_TAG, OBS_TAG, RankContext, follow_until_stop
from dvla_hpc.roles.transports import episode_transport
from dvla_hpc.roles.tree import distribution_tree, wire_device
from dvla_hpc.runtime import assembly


def run_infer(ctx: RankContext) -> None:
    bp, rank = ctx.bp, ctx.rank
    sims = ctx.plan.sims_for(rank)
    learners = ctx.plan.ranks("learn")
    ports = assembly.infer_ports(bp, len(sims))
    for sim in sims:
        ctx.pump.receive_into(sim, OBS_TAG, ports.obs_pool, ports.obs_in, SlabKind.OBSERVATIONS,
                              bp.cfg.env.envs_per_sampler // 2, depth=2)
    ctx.pump.send_from(ports.action_out, ports.action_pool, ACTION_TAG,
                       lambda slot: int(ports.action_pool.slots[slot]["header"][H.SAMPLER]))
    ctx.pump.send_from(ports.episode_out, ports.episode_pool, EPISODE_TAG,
                       lambda slot: learners[learner_for_group(
                           int(ports.episode_pool.slots[slot]["header"][H.GROUP]), len(learners))],
                       transport=episode_transport(ctx, learners))

    sig = assembly.Signals(ctx.stop, ctx.failed)
    holder = assembly.weight_holder(bp, ctx.device, initial_version=-1)
    wire = wire_device(ctx)
    landing = None if wire == holder.device else \
        DATA_PATH.zeros("weights/landing", tuple(holder.buffers[0].shape), holder.buffers[0].dtype)
    tree = distribution_tree(ctx, holder.buffers[0] if landing is None else landing)
    lanes = [*assembly.infer_lanes(bp, holder, ports, bp.cfg.run.seed + 1000 + rank, sig),
             TreeReceiveLane(tree, holder, ctx.stop, ctx.failed, wire=landing)]
    ctx.pump.start()
    for lane in lanes:
        lane.start()
    follow_until_stop(ctx, lanes)
