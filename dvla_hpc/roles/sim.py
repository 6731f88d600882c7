"""A sim rank: one sampler whose observations go to its infer rank and whose actions come back."""
from __future__ import annotations

from dvla_hpc.lanes.lane import SlotQueue
from dvla_hpc.lanes.sample import GroupSchedule, SampleLane
from dvla_hpc.memory.layouts import SlabKind
from dvla_hpc.memory.slab_pool import SlabPool
from dvla_hpc.roles.common import ACTION_TAG, OBS_TAG, RankContext, follow_until_stop
from dvla_hpc.runtime.blueprint import make_vector_env


def run_sim(ctx: RankContext) -> None:
    cfg, bp, rank = ctx.cfg, ctx.bp, ctx.rank
    infer_rank = ctx.plan.infer_for_sim[rank]
    half = cfg.env.envs_per_sampler // 2
    obs_pool, action_pool = SlabPool(bp.obs_layout, 3), SlabPool(bp.action_layout, 3)
    obs_out, action_in = SlotQueue(3, "observations"), SlotQueue(3, "actions")
    ctx.pump.send_from(obs_out, obs_pool, OBS_TAG, lambda slot: infer_rank)
    ctx.pump.receive_into(infer_rank, ACTION_TAG, action_pool, action_in, SlabKind.ACTIONS, half, depth=2)
    lane = SampleLane(rank, lambda: make_vector_env(cfg), cfg.env.envs_per_sampler,
                      GroupSchedule(cfg.run.seed, rank, cfg.learn.group_size),
                      bp.episode_budget(len(ctx.plan.ranks("sim"))),
                      obs_pool, obs_out, action_pool, action_in, ctx.stop, ctx.failed)
    ctx.pump.start()
    lane.start()
    follow_until_stop(ctx, [lane], {"sample": lambda: (lane.env_steps, lane.worker_restarts)})
