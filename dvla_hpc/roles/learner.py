"""A learner rank: one data-parallel replica that trains on the groups routed to it. The learner
root also publishes weights down the broadcast tree, decides when the run ends, and gathers
every rank's reports into the summary."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from dvla_hpc.lanes.distribute import TreeSendLane, WeightPublisher
from dvla_hpc.lanes.lane import Lane
from dvla_hpc.learn.replicas import LearnerReplicas
from dvla_hpc.memory.layouts import SlabKind
from dvla_hpc.output.metrics_log import MetricsLog
from dvla_hpc.planes.control import Kind, Message
from dvla_hpc.roles.common import EPISODE_TAG, Pulse, RankContext, follow_until_stop, raise_if_failed
from dvla_hpc.roles.root_inbox import RootInbox
from dvla_hpc.roles.transports import episode_transport
from dvla_hpc.roles.tree import distribution_tree, wire_device
from dvla_hpc.runtime import assembly
from dvla_hpc.runtime.init_from import load_initial_weights
from dvla_hpc.runtime.report import build_summary, memory_report, rank_summary
from dvla_hpc.runtime.reports import merge_lane_reports, rank_report, rank_status, status_record
from dvla_hpc.runtime.learner_state import resume_learner, save_learner
from dvla_hpc.runtime.supervise import supervise


def run_learner(ctx: RankContext, run_dir: Path) -> dict | None:
    cfg, bp = ctx.cfg, ctx.bp
    is_root = ctx.rank == ctx.plan.learner_root
    infer_ranks = ctx.plan.ranks("infer")
    sims = ctx.plan.ranks("sim")
    ports = assembly.learn_ports(bp, len(sims))
    transport = episode_transport(ctx, infer_ranks)
    for rank in infer_ranks:
        ctx.pump.receive_into(rank, EPISODE_TAG, ports.episode_pool, ports.episode_in, SlabKind.EPISODE,
                              bp.spec.max_episode_steps, depth=4, transport=transport)
    group = ctx.torch_plane.learners if ctx.data_backend == "torch" else None
    replicas = LearnerReplicas(ctx.comms.role, group, cfg.learn.allreduce_bucket_mib,
                               cfg.learn.check_replicas)
    learner = assembly.build_learner(bp, ctx.device, replicas)
    resumed = resume_learner(learner, cfg.run.resume, announce=is_root) if cfg.run.resume else {}
    if cfg.run.init_from:  # main checked that it fits; every replica starts from the same weights
        load_initial_weights(learner, cfg.run.init_from)
    writer = assembly.trajectory_writer(bp, run_dir / "trajectories", ctx.rank)
    sig = assembly.Signals(ctx.stop, ctx.failed)
    if not is_root:
        lanes = assembly.learn_lanes(bp, learner, ports, sig, lambda record: None, writer, sims)
        lanes.learn.progress.resume_from(resumed)
        ctx.pump.start()
        for lane in lanes.all:
            lane.start()
        follow_until_stop(ctx, lanes.all)
        return None

    publisher = WeightPublisher(learner.flat, wire_device(ctx))
    metrics = MetricsLog(run_dir / "metrics.jsonl")
    send = TreeSendLane(distribution_tree(ctx, publisher.outgoing), publisher, sig.stop, sig.failed)
    credit = assembly.flow_credit(bp, sims, replicas.size)

    def publish(version: int, groups_trained: np.ndarray) -> None:
        """Weights down the tree; a new grant to each sampler whose grant grew."""
        publisher.publish(version)
        if credit is not None:
            credit.update(groups_trained)
            for sim, granted in credit.news():
                ctx.control.post(sim, Message(Kind.GRANT, ctx.rank, step=granted))

    lanes = assembly.learn_lanes(bp, learner, ports, sig, metrics.log, writer, sims, publish, send,
                                 checkpoint=lambda: save_learner(learner, lanes.learn.progress, run_dir, cfg))
    lanes.learn.progress.resume_from(resumed)
    inbox = RootInbox(ctx.plan, ctx.rank)
    started = time.perf_counter()
    ctx.pump.start()
    for lane in lanes.all:
        lane.start()
    try:
        rss, reason = lead(ctx, lanes.learn, lanes.all, metrics, inbox, started)
    finally:  # an error goes on to abort the job at once: no lane is joined behind a dead peer
        ctx.stop.set()
        for rank in range(ctx.plan.world_size):  # before joining: other learner replicas must leave too
            if rank != ctx.rank:
                ctx.control.post(rank, Message(Kind.STOP, ctx.rank))
    for lane in lanes.all:
        lane.finish()
    wall = time.perf_counter() - started
    raise_if_failed(lanes.all, ctx.failed)
    inbox.gather_finished(ctx.control)
    ctx.pump.drain_and_stop(ctx.comms.data)
    metrics.close()
    ckpt = save_learner(learner, lanes.learn.progress, run_dir, cfg)
    progress = lanes.learn.progress
    own = [lane.report() for lane in lanes.all]
    stopped_by = ctx.stop_request.signal_name or ("signal on another rank" if ctx.stop_request else reason)
    return build_summary(
        progress, wall, merge_lane_reports(own + inbox.lane_reports()),
        mode=cfg.run.mode, world_size=ctx.plan.world_size, layout=ctx.plan.describe(), stopped_by=stopped_by,
        policy_version=learner.version, versions_skipped=publisher.skipped,
        weight_bytes=int(publisher.outgoing.numel() * 4), learners=replicas.size,
        replica_checks=replicas.checks,
        data_plane={"backend": ctx.data_backend, "mib_received": round(ctx.pump.bytes_received / 2**20, 2),
                    "pump_first_sleep_ms": round(1e3 * ctx.pump.first_sleep_s, 3)},
        devices=ctx.devices, pools={"episodes": ports.episode_pool.stats()}, checkpoint=str(ckpt),
        trained_by_sampler=lanes.learn.trained_by_sampler(),
        memory=memory_report(rss), heartbeats=inbox.heartbeat_summary(ctx.control, wall),
        ranks=rank_summary([("learn", rank_report(ctx.telemetry, ctx.heartbeats_sent)), *inbox.rank_reports()]),
        gpu=ctx.telemetry.summary()["gpu"])


def lead(ctx: RankContext, learn, lanes: list[Lane], metrics: MetricsLog, inbox: RootInbox,
         started: float):
    """Supervise the run; beat to the watch tree's top and end the job if a neighbour falls silent."""
    pulse = Pulse(ctx, lanes)

    def keep_going() -> bool:
        raise_if_failed(lanes, ctx.failed)
        if ctx.pump.error is not None:
            raise ctx.pump.error
        messages = ctx.control.poll()
        for msg in messages:
            if msg.kind == Kind.STOP_REQUEST:
                ctx.stop_request.event.set()
            inbox.absorb(msg)
        pulse.heard(messages)
        pulse.beat()
        return not ctx.stop_request

    def telemetry() -> dict:
        return {str(ctx.rank): status_record(ctx.role, *rank_status(ctx.telemetry, lanes)), **inbox.latest_telemetry()}

    return supervise(ctx.cfg, learn, lanes, metrics, started, keep_going, telemetry)
