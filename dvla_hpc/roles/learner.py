"""The learner root: trains, publishes weights down the tree, records trajectories, decides when
the run ends, and gathers every rank's lane statistics into the summary."""
from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

from dvla_hpc.lanes.distribute import TreeSendLane, WeightPublisher
from dvla_hpc.lanes.lane import Lane, SlotQueue
from dvla_hpc.lanes.learn import LearnLane
from dvla_hpc.lanes.record import RecordLane
from dvla_hpc.learn.learner import GRPOLearner
from dvla_hpc.memory.accounting import RssTrack
from dvla_hpc.memory.layouts import SlabKind
from dvla_hpc.memory.slab_pool import SlabPool
from dvla_hpc.output.metrics_log import MetricsLog
from dvla_hpc.output.trajectory_writer import TrajectoryWriter
from dvla_hpc.planes.control import Kind, Message
from dvla_hpc.roles.common import (EPISODE_TAG, LANE_NAMES, RankContext, raise_if_failed)
from dvla_hpc.roles.tree import distribution_tree
from dvla_hpc.runtime.report import build_summary, memory_report
from dvla_hpc.runtime.run_dir import resume_learner, save_learner
from dvla_hpc.runtime.supervise import supervise

FINISH_TIMEOUT_S = 60.0


def run_learner(ctx: RankContext, run_dir: Path) -> dict:
    cfg, bp = ctx.cfg, ctx.bp
    infer_ranks = ctx.plan.ranks("infer")
    pool = SlabPool(bp.episode_layout, bp.learner_episode_slots(len(ctx.plan.ranks("sim"))))
    episode_in, retire_q = SlotQueue(pool.count, "episodes"), SlotQueue(pool.count, "retired episodes")
    for rank in infer_ranks:
        ctx.pump.receive_into(rank, EPISODE_TAG, pool, episode_in, SlabKind.EPISODE,
                              bp.spec.max_episode_steps, depth=4)
    learner = GRPOLearner(cfg.learn, bp.initial_policy(), bp.instruction_tokens, bp.spec, cfg.run.seed)
    resumed = resume_learner(learner, cfg.run.resume) if cfg.run.resume else {}
    publisher = WeightPublisher(learner.flat)
    metrics = MetricsLog(run_dir / "metrics.jsonl")
    writer = TrajectoryWriter(run_dir / "trajectories", ctx.rank, cfg.env.name,
                              cfg.output.episodes_per_shard) if cfg.output.record_every else None

    def announce(version: int) -> None:
        for rank in infer_ranks:
            ctx.control.post(rank, Message(Kind.WEIGHTS, ctx.rank, version=version))

    tree = distribution_tree(ctx, publisher.outgoing.numpy())
    learn = LearnLane(learner, pool, episode_in, publisher.publish, lambda s: retire_q.put(s, ctx.stop),
                      metrics.log, cfg.learn.group_size, cfg.learn.groups_per_update,
                      cfg.learn.publish_every, ctx.stop, ctx.failed)
    learn.progress.resume_from(resumed)
    lanes: list[Lane] = [learn, TreeSendLane(tree, publisher, announce, ctx.stop, ctx.failed),
                         RecordLane(writer, cfg.output.record_every, pool, retire_q, cfg.env.name,
                                    bp.spec.instructions, ctx.stop, ctx.failed)]
    started = time.perf_counter()
    ctx.pump.start()
    for lane in lanes:
        lane.start()
    remote: dict[int, dict] = defaultdict(dict)
    finished: dict[int, int] = {}
    try:
        rss, reason = lead(ctx, learn, lanes, metrics, remote, finished, started)
    finally:
        ctx.stop.set()
        for lane in lanes:
            lane.join(timeout=30)
    wall = time.perf_counter() - started
    raise_if_failed(lanes, ctx.failed)
    for rank in range(ctx.plan.world_size):
        if rank != ctx.rank:
            ctx.control.post(rank, Message(Kind.STOP, ctx.rank))
    gather_finished(ctx, remote, finished)
    ctx.pump.drain_and_stop(ctx.comms.data)
    metrics.close()
    ckpt = save_learner(learner, learn.progress, run_dir)
    own = {lane.name: lane.shares() for lane in lanes}
    stopped_by = ctx.stop_request.signal_name or ("signal on another rank" if ctx.stop_request else reason)
    extra = {"mode": cfg.run.mode, "world_size": ctx.plan.world_size, "layout": ctx.plan.describe(),
             "stopped_by": stopped_by,
             "policy_version": learner.version, "versions_skipped": publisher.skipped,
             "weight_bytes": int(publisher.outgoing.numel() * 4),
             "data_plane_mib_received": round(ctx.pump.bytes_received / 2**20, 2),
             "pools": {"episodes": pool.stats()}, "checkpoint": str(ckpt), "memory": memory_report(rss),
             **remote_counters(remote)}
    return build_summary(learn.progress, wall, merge_lane_shares(own, remote), extra)


def lead(ctx: RankContext, learn: LearnLane, lanes: list[Lane], metrics: MetricsLog,
         remote: dict, finished: dict, started: float) -> tuple[RssTrack, str]:
    def keep_going() -> bool:
        raise_if_failed(lanes, ctx.failed)
        if ctx.pump.error is not None:
            raise ctx.pump.error
        for msg in ctx.control.poll():
            if msg.kind == Kind.STOP_REQUEST:
                ctx.stop_request.event.set()
            absorb(msg, remote, finished)
        return not ctx.stop_request

    return supervise(ctx.cfg, learn, lanes, metrics, started, keep_going)


def absorb(msg: Message, remote: dict, finished: dict) -> None:
    if msg.kind == Kind.METRICS:
        remote[msg.source][LANE_NAMES[msg.topic]] = msg.values
    elif msg.kind == Kind.FINISHED:
        finished[msg.source] = msg.payload_size


def gather_finished(ctx: RankContext, remote: dict, finished: dict) -> None:
    others = [r for r in range(ctx.plan.world_size) if r != ctx.rank]
    deadline = time.monotonic() + FINISH_TIMEOUT_S

    def done() -> bool:
        return all(r in finished and len(remote[r]) >= finished[r] for r in others)

    while not done():
        if time.monotonic() > deadline:
            missing = [r for r in others if not (r in finished and len(remote[r]) >= finished[r])]
            raise TimeoutError(f"ranks {missing} did not finish within {FINISH_TIMEOUT_S:.0f}s of STOP")
        for msg in ctx.control.poll():
            absorb(msg, remote, finished)
        time.sleep(0.01)


def merge_lane_shares(own: dict, remote: dict) -> dict:
    """Per lane: busy and waiting shares averaged over the ranks that run it."""
    sums: dict[str, list] = defaultdict(lambda: [0.0, 0.0, 0, 0])
    for name, s in own.items():
        sums[name] = [s["busy"], s["waiting"], s["items"], 1]
    for lanes in remote.values():
        for name, values in lanes.items():
            acc = sums[name]
            acc[0] += values[0]
            acc[1] += values[1]
            acc[2] += int(values[2])
            acc[3] += 1
    return {name: {"busy": round(b / n, 4), "waiting": round(w / n, 4), "items": items, "ranks": n}
            for name, (b, w, items, n) in sums.items()}


def remote_counters(remote: dict) -> dict:
    samples = [lanes["sample"] for lanes in remote.values() if "sample" in lanes]
    infers = [lanes["infer"] for lanes in remote.values() if "infer" in lanes]
    return {"worker_restarts": int(sum(v[5] for v in samples)),
            "weight_swaps": int(sum(v[4] for v in infers))}
