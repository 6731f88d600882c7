"""Single-process mode: all four lanes are threads of this process, linked by in-process queues."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import torch

from dvla_hpc.config.schema import Config
from dvla_hpc.lanes.distribute import LocalDistributeLane, WeightPublisher
from dvla_hpc.lanes.infer import EpisodeAssembler, InferLane
from dvla_hpc.lanes.lane import Lane, SlotQueue
from dvla_hpc.lanes.learn import LearnLane
from dvla_hpc.lanes.record import RecordLane
from dvla_hpc.lanes.sample import GroupSchedule, SampleLane
from dvla_hpc.learn.learner import GRPOLearner
from dvla_hpc.memory.slab_pool import SlabPool
from dvla_hpc.memory.static_pool import DoubleBufferedWeights
from dvla_hpc.output.metrics_log import MetricsLog
from dvla_hpc.output.trajectory_writer import TrajectoryWriter
from dvla_hpc.runtime.blueprint import Blueprint, make_vector_env
from dvla_hpc.runtime.report import build_summary, memory_report
from dvla_hpc.runtime.supervise import supervise
from dvla_hpc.runtime.run_dir import resume_learner, save_learner
from dvla_hpc.runtime.signals import StopRequest


class LaneFailure(RuntimeError):
    pass


def run_local(cfg: Config, run_dir: Path, stop_request: StopRequest) -> dict:
    torch.set_num_threads(cfg.run.torch_threads)
    bp = Blueprint.from_config(cfg)
    stop, failed = threading.Event(), threading.Event()
    obs_pool = SlabPool(bp.obs_layout, 3)
    action_pool = SlabPool(bp.action_layout, 3)
    episode_pool = SlabPool(bp.episode_layout, bp.learner_episode_slots(1) + bp.infer_episode_slots(1))
    obs_q, action_q = SlotQueue(3, "observations"), SlotQueue(3, "actions")
    episode_q = SlotQueue(episode_pool.count, "episodes")
    retire_q = SlotQueue(episode_pool.count, "retired episodes")

    learner = GRPOLearner(cfg.learn, bp.initial_policy(), bp.instruction_tokens, bp.spec, cfg.run.seed)
    resumed = resume_learner(learner, cfg.run.resume) if cfg.run.resume else {}
    holder = DoubleBufferedWeights(bp.make_policy)
    holder.load_initial(learner.flat, learner.version)
    publisher = WeightPublisher(learner.flat)
    metrics = MetricsLog(run_dir / "metrics.jsonl")
    writer = TrajectoryWriter(run_dir / "trajectories", 0, cfg.env.name, cfg.output.episodes_per_shard) \
        if cfg.output.record_every else None

    lanes: list[Lane] = []
    started = time.perf_counter()
    try:
        sample = SampleLane(0, lambda: make_vector_env(cfg), cfg.env.envs_per_sampler,
                            GroupSchedule(cfg.run.seed, 0, cfg.learn.group_size), bp.episode_budget(1),
                            obs_pool, obs_q, action_pool, action_q, stop, failed)
        infer = InferLane(holder, bp.instruction_tokens, bp.bins, obs_pool, obs_q, action_pool, action_q,
                          EpisodeAssembler(episode_pool, bp.spec.max_episode_steps), episode_q,
                          cfg.run.seed + 1, stop, failed)
        learn = LearnLane(learner, episode_pool, episode_q, publisher.publish,
                          lambda slot: retire_q.put(slot, stop), metrics.log,
                          cfg.learn.group_size, cfg.learn.groups_per_update, cfg.learn.publish_every,
                          stop, failed)
        learn.progress.resume_from(resumed)
        distribute = LocalDistributeLane(publisher, holder, stop, failed)
        record = RecordLane(writer, cfg.output.record_every, episode_pool, retire_q, cfg.env.name,
                            bp.spec.instructions, stop, failed)
        lanes = [sample, infer, learn, distribute, record]
        for lane in lanes:
            lane.start()
        rss, reason = supervise(cfg, learn, lanes, metrics, started,
                  keep_going=lambda: not failed.is_set() and not stop_request)
    finally:
        stop.set()
        for lane in lanes:
            lane.join(timeout=30)
        metrics.close()
    wall = time.perf_counter() - started
    if failed.is_set():
        broken = next(lane for lane in lanes if lane.error is not None)
        raise LaneFailure(f"lane {broken.name} failed:\n{broken.error_text}")
    ckpt = save_learner(learner, learn.progress, run_dir)
    extra = {"mode": cfg.run.mode, "world_size": 1, "policy_version": learner.version,
             "stopped_by": stop_request.signal_name or reason,
             "versions_skipped": publisher.skipped, "weight_swaps": infer.swaps,
             "worker_restarts": sample.worker_restarts, "trajectories_written": record.written,
             "pools": {"observations": obs_pool.stats(), "actions": action_pool.stats(),
                       "episodes": episode_pool.stats()},
             "checkpoint": str(ckpt), "memory": memory_report(rss)}
    return build_summary(learn.progress, wall, {lane.name: lane.shares() for lane in lanes}, extra)
