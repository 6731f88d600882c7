"""An infer rank: serves its sim ranks' observations and receives weights down the broadcast tree."""
from __future__ import annotations

from dvla_hpc.lanes.distribute import TreeReceiveLane
from dvla_hpc.lanes.infer import EpisodeAssembler, InferLane
from dvla_hpc.lanes.lane import SlotQueue
from dvla_hpc.memory.layouts import H, SlabKind
from dvla_hpc.memory.slab_pool import SlabPool
from dvla_hpc.memory.static_pool import DoubleBufferedWeights
from dvla_hpc.roles.common import ACTION_TAG, EPISODE_TAG, OBS_TAG, RankContext, follow_until_stop
from dvla_hpc.roles.tree import distribution_tree


def run_infer(ctx: RankContext) -> None:
    cfg, bp, rank = ctx.cfg, ctx.bp, ctx.rank
    sims = ctx.plan.sims_for(rank)
    half = cfg.env.envs_per_sampler // 2
    obs_pool = SlabPool(bp.obs_layout, 3 * len(sims))
    action_pool = SlabPool(bp.action_layout, 2 * len(sims) + 1)
    episode_pool = SlabPool(bp.episode_layout, bp.infer_episode_slots(len(sims)))
    obs_in = SlotQueue(obs_pool.count, "observations")
    action_out = SlotQueue(action_pool.count, "actions")
    episode_out = SlotQueue(episode_pool.count, "episodes")
    for sim in sims:
        ctx.pump.receive_into(sim, OBS_TAG, obs_pool, obs_in, SlabKind.OBSERVATIONS, half, depth=2)
    ctx.pump.send_from(action_out, action_pool, ACTION_TAG,
                       lambda slot: int(action_pool.slots[slot]["header"][H.SAMPLER]))
    ctx.pump.send_from(episode_out, episode_pool, EPISODE_TAG, lambda slot: ctx.plan.learner_root)

    holder = DoubleBufferedWeights(bp.make_policy, initial_version=-1)
    tree = distribution_tree(ctx, holder.buffers[0].numpy())
    distribute = TreeReceiveLane(tree, holder, ctx.stop, ctx.failed)
    infer = InferLane(holder, bp.instruction_tokens, bp.bins, obs_pool, obs_in, action_pool, action_out,
                      EpisodeAssembler(episode_pool, bp.spec.max_episode_steps), episode_out,
                      cfg.run.seed + 1000 + rank, ctx.stop, ctx.failed)
    ctx.pump.start()
    distribute.start()
    infer.start()
    follow_until_stop(ctx, [infer, distribute], {"infer": lambda: (infer.swaps,)})
