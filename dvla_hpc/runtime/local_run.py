"""Single-process mode: all four lanes are threads of this process, linked by in-process queues."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from dvla_hpc.config.schema import Config
from dvla_hpc.lanes.distribute import LocalDistributeLane, WeightPublisher
from dvla_hpc.lanes.lane import Lane
from dvla_hpc.memory.accounting import DATA_PATH
from dvla_hpc.output.metrics_log import MetricsLog
from dvla_hpc.output.telemetry import Telemetry
from dvla_hpc.runtime import assembly
from dvla_hpc.runtime.blueprint import Blueprint
from dvla_hpc.runtime.devices import local_device
from dvla_hpc.runtime.init_from import load_initial_weights
from dvla_hpc.runtime.memory_check import check_memory_plan
from dvla_hpc.runtime.report import build_summary, memory_report, rank_summary
from dvla_hpc.runtime.reports import merge_lane_reports, rank_report, rank_status, status_record
from dvla_hpc.runtime.learner_state import resume_learner, save_learner
from dvla_hpc.runtime.run_dir import prepare_run_dir
from dvla_hpc.runtime.signals import StopRequest
from dvla_hpc.runtime.supervise import supervise


class LaneFailure(RuntimeError):
    pass


def run_local(cfg: Config, run_dir: Path, stop_request: StopRequest) -> dict:
    torch.set_num_threads(cfg.run.torch_threads)
    bp = Blueprint.from_config(cfg)
    device = local_device(cfg.run.device)
    check_memory_plan(bp, "local", device, samplers=1)
    prepare_run_dir(cfg, run_dir)
    DATA_PATH.configure(pin=device.type == "cuda")
    telemetry = Telemetry(device.index if device.type == "cuda" else None)
    sig = assembly.Signals.new()
    sim_ports, infer_ports, learn_ports = assembly.local_ports(bp)

    learner = assembly.build_learner(bp, device)
    resumed = resume_learner(learner, cfg.run.resume) if cfg.run.resume else {}
    if cfg.run.init_from:
        load_initial_weights(learner, cfg.run.init_from)
    holder = assembly.weight_holder(bp, device, learner.version)
    holder.load_initial(learner.flat, learner.version)
    publisher = WeightPublisher(learner.flat)
    metrics = MetricsLog(run_dir / "metrics.jsonl")
    writer = assembly.trajectory_writer(bp, run_dir / "trajectories", 0)

    flow, credit = assembly.flow_control(bp), assembly.flow_credit(bp, [0], learners=1)

    def publish(version: int, groups_trained: np.ndarray) -> None:
        publisher.publish(version)
        if credit is not None:
            credit.update(groups_trained)
            flow.observe(int(credit.granted[0]))

    lanes: list[Lane] = []
    started = time.perf_counter()
    try:
        learner_lanes = assembly.learn_lanes(
            bp, learner, learn_ports, sig, metrics.log, writer, [0], publish,
            LocalDistributeLane(publisher, holder, sig.stop, sig.failed),
            checkpoint=lambda: save_learner(learner, learner_lanes.learn.progress, run_dir, cfg))
        learner_lanes.learn.progress.resume_from(resumed)
        lanes = [*assembly.sim_lanes(bp, 0, 1, sim_ports, sig, flow),
                 *assembly.infer_lanes(bp, holder, infer_ports, cfg.run.seed + 1, sig),
                 *learner_lanes.all]
        for lane in lanes:
            lane.start()
        rss, reason = supervise(cfg, learner_lanes.learn, lanes, metrics, started,
                                keep_going=lambda: not sig.failed.is_set() and not stop_request,
                                telemetry=lambda: {"0": status_record("local", *rank_status(telemetry, lanes))})
    finally:
        sig.stop.set()
        for lane in lanes:
            lane.finish()
        metrics.close()
    wall = time.perf_counter() - started
    if sig.failed.is_set():
        broken = next(lane for lane in lanes if lane.error is not None)
        raise LaneFailure(f"lane {broken.name} failed:\n{broken.error_text}")
    ckpt = save_learner(learner, learner_lanes.learn.progress, run_dir, cfg)
    summary = build_summary(
        learner_lanes.learn.progress, wall, merge_lane_reports([lane.report() for lane in lanes]),
        mode=cfg.run.mode, world_size=1, layout="1 process: every lane a thread",
        stopped_by=stop_request.signal_name or reason, policy_version=learner.version,
        versions_skipped=publisher.skipped, weight_bytes=int(learner.flat.numel() * 4), learners=1,
        replica_checks=0, data_plane={"backend": "in-process", "mib_received": 0.0, "pump_first_sleep_ms": None},
        devices={"sim": "cpu", "infer": str(device), "learn": str(device)},
        pools={"episodes": learn_ports.episode_pool.stats()},
        trained_by_sampler=learner_lanes.learn.trained_by_sampler(),
        checkpoint=str(ckpt), memory=memory_report(rss),
        heartbeats={"received": 0, "ranks": 0, "max_silence_s": 0.0, "root_control_received_per_s": 0.0,
                    "root_control_sent_per_s": 0.0},
        ranks=rank_summary([("local", rank_report(telemetry, heartbeats_sent=0))]),
        gpu=telemetry.summary()["gpu"])
    telemetry.close()
    return summary
