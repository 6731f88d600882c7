"""A sim rank: one sampler whose observations go to its infer rank and whose actions come back."""
from __future__ import annotations

from dvla_hpc.memory.layouts import SlabKind
from dvla_hpc.planes.control import Kind, Message
from dvla_hpc.roles.common import ACTION_TAG, OBS_TAG, RankContext, follow_until_stop
from dvla_hpc.runtime import assembly


def run_sim(ctx: RankContext) -> None:
    bp, rank = ctx.bp, ctx.rank
    infer_rank = ctx.plan.infer_for_sim[rank]
    ports = assembly.sim_ports(bp)
    ctx.pump.send_from(ports.obs_out, ports.obs_pool, OBS_TAG, lambda slot: infer_rank)
    ctx.pump.receive_into(infer_rank, ACTION_TAG, ports.action_pool, ports.action_in, SlabKind.ACTIONS,
                          bp.cfg.env.envs_per_sampler // 2, depth=2)
    flow = assembly.flow_control(bp)
    lanes = assembly.sim_lanes(bp, rank, len(ctx.plan.ranks("sim")), ports,
                               assembly.Signals(ctx.stop, ctx.failed), flow)
    ctx.pump.start()
    for lane in lanes:
        lane.start()

    def hear(msg: Message) -> None:
        if msg.kind == Kind.GRANT and flow is not None:
            flow.observe(msg.step)  # the groups the learner root grants this sampler

    follow_until_stop(ctx, lanes, hear)
