"""The run's main loop on the process that trains: stop conditions, lane reports, progress bar."""
from __future__ import annotations

import time
from dataclasses import asdict
from typing import Callable

import psutil

from dvla_hpc.config.schema import Config
from dvla_hpc.lanes.lane import Lane
from dvla_hpc.lanes.learn import LearnLane, RunProgress
from dvla_hpc.output.metrics_log import MetricsLog
from dvla_hpc.memory.accounting import DATA_PATH, RssTrack
from dvla_hpc.runtime.report import ProgressBar


def reached_success(target: float, progress: RunProgress, window: int = 100) -> bool:
    return target > 0 and len(progress.successes) >= window and progress.recent_success(window) >= target


def stop_reason(cfg: Config, progress: RunProgress, elapsed: float) -> str | None:
    if progress.env_steps >= cfg.run.total_env_steps:
        return "env steps"
    if cfg.run.wall_clock_limit_s and elapsed >= cfg.run.wall_clock_limit_s:
        return "wall clock"
    if reached_success(cfg.run.stop_at_success, progress):
        return "success"
    return None


def supervise(cfg: Config, learn: LearnLane, lanes: list[Lane], metrics: MetricsLog, started: float,
              keep_going: Callable[[], bool], telemetry: Callable[[], dict]) -> tuple[RssTrack, str]:
    """Runs until the step budget, the wall-clock limit or the success target is reached, or
    `keep_going()` says no; returns the RSS track and that reason (logged as an "end" record).
    The first trained update ends the warm-up: the data path is sealed and RSS growth counts from there.
    Each "lanes" metrics record carries `telemetry()`: the latest CPU, memory and GPU figures per rank,
    and how busy this host's CPUs were since the previous record (100 = every core, whoever ran)."""
    bar = ProgressBar(cfg.run.total_env_steps, cfg.run.progress_bar)
    psutil.cpu_percent()  # starts the host's interval: each later call covers the time since the last
    next_metrics = started + cfg.run.metrics_every_s
    rss = RssTrack()
    reason = "stop request"
    try:
        while keep_going():
            now = time.perf_counter()
            if (why := stop_reason(cfg, learn.progress, now - started)) is not None:
                reason = why
                break
            if not DATA_PATH.sealed and learn.progress.updates >= 1:
                DATA_PATH.seal()
                rss.sample(now - started)
                rss.mark_warm()
            if now >= next_metrics:
                next_metrics = now + cfg.run.metrics_every_s
                rss_mib = rss.sample(now - started)
                metrics.log({"kind": "lanes", "t": round(now - started, 3),
                             "env_steps": learn.progress.env_steps,
                             **{lane.name: asdict(lane.report()) for lane in lanes},
                             "rss_mib": round(rss_mib, 1),
                             "data_path_allocations_after_warmup": sum(DATA_PATH.after_warmup.values()),
                             "host_cpu_busy_percent": psutil.cpu_percent(),
                             "ranks": telemetry()})
            bar.update(learn.progress)
            time.sleep(0.05)
        bar.update(learn.progress)
        rss.sample(time.perf_counter() - started)
        p = learn.progress
        metrics.log({"kind": "end", "t": round(time.perf_counter() - started, 3), "reason": reason,
                     "env_steps": p.env_steps, "episodes": p.episodes,
                     "success_recent": round(p.recent_success(), 4)})
    finally:
        bar.close()
    return rss, reason
