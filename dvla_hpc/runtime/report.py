"""Progress bar while the run goes, summary.json and the summary table at its end."""
from __future__ import annotations

import sys
import time

from tqdm import tqdm

from dvla_hpc.lanes.learn import RunProgress
from dvla_hpc.memory.accounting import DATA_PATH, RssTrack
from dvla_hpc.runtime.reports import RankReport


def window_rate(values: list[bool], first: bool) -> float:
    if not values:
        return 0.0
    k = max(1, len(values) // 10)
    part = values[:k] if first else values[-k:]
    return round(sum(part) / len(part), 4)


def build_summary(progress: RunProgress, wall_seconds: float, lanes: dict, *, mode: str, world_size: int,
                  layout: str, stopped_by: str, policy_version: int, versions_skipped: int,
                  weight_bytes: int, learners: int, replica_checks: int, data_plane: dict, devices: dict,
                  pools: dict, checkpoint: str, memory: dict, heartbeats: dict, ranks: dict,
                  gpu: str, trained_by_sampler: dict[str, dict[str, int]]) -> dict:
    """summary.json: every key is a parameter, so both modes write the same keys."""
    def counter(lane: str, name: str) -> int:
        return int(lanes.get(lane, {}).get(name, 0))

    return {
        "env_steps": progress.env_steps,
        "wall_seconds": round(wall_seconds, 3),
        "env_steps_per_second": round(progress.env_steps / max(wall_seconds, 1e-9), 2),
        "episodes": progress.episodes,
        "failed_episodes": progress.failed_episodes,
        "updates_without_samples": progress.empty_updates,
        "success_rate_first": window_rate(progress.successes, first=True),
        "success_rate_last": window_rate(progress.successes, first=False),
        "updates": progress.updates,
        "samples_trained": progress.samples_trained,
        "samples_dropped_stale": progress.dropped_stale,
        "policy_lag_mean": round(progress.lag_mean, 4),
        # sampler id (its sim rank) -> GRPO groups trained, and their env steps
        "groups_trained_by_sampler": trained_by_sampler["groups"],
        "env_steps_trained_by_sampler": trained_by_sampler["env_steps"],
        "lanes": lanes,
        "mode": mode, "world_size": world_size, "layout": layout, "stopped_by": stopped_by,
        "policy_version": policy_version, "versions_skipped": versions_skipped,
        "weight_swaps": counter("infer", "weight_swaps"),
        # both counters cover every env step run, episodes still open at the end included
        "inference_per_env_step": round(counter("infer", "observations") / max(counter("sample", "env_steps"), 1), 4),
        "envs_per_policy_call": round(counter("infer", "observations")
                                      / max(counter("infer", "policy_calls"), 1), 2),
        "worker_restarts": counter("sample", "worker_restarts"),
        "trajectories_written": counter("record", "written"),
        "weight_bytes": weight_bytes, "learners": learners, "replica_checks": replica_checks,
        "data_plane": data_plane, "devices": devices, "pools": pools, "checkpoint": checkpoint,
        "memory": memory, "heartbeats": heartbeats, "ranks": ranks, "gpu": gpu,
    }


def rank_summary(reports: list[tuple[str, RankReport]]) -> dict:
    """Per role: how many ranks, their mean CPU share, and the largest memory figures."""
    out: dict[str, dict] = {}
    for role in sorted({role for role, _ in reports}):
        mine = [r for rr, r in reports if rr == role]
        gpu = [r for r in mine if r.gpu_util_percent_mean >= 0]
        gpu_util = sum(r.gpu_util_percent_mean for r in gpu) / len(gpu) if gpu else None
        out[role] = {
            "ranks": len(mine),
            "cpu_percent_mean": round(sum(r.cpu_percent_mean for r in mine) / len(mine), 1),
            "rss_mib_max": round(max(r.rss_mib_max for r in mine), 1),
            "gpu_util_percent_mean": None if gpu_util is None else round(gpu_util, 1),
            "gpu_mem_used_mib_max": round(max(r.gpu_mem_used_mib_max for r in gpu), 1) if gpu else None,
            "data_path_mib_max": max(r.data_path_mib for r in mine),
            "device_data_path_mib_max": max(r.device_mib for r in mine),
            "device_peak_mib_max": max(r.device_peak_mib for r in mine),
            "allocations_after_warmup": sum(r.allocations_after_warmup for r in mine),
            "heartbeats_sent": sum(r.heartbeats_sent for r in mine),
        }
    return out


class ProgressBar:
    def __init__(self, total_steps: int, enabled: bool):
        self.bar = tqdm(total=total_steps, unit="step", file=sys.stderr, dynamic_ncols=True,
                        disable=not enabled, mininterval=1.0, smoothing=0.1)
        self.shown = 0
        self.last = 0.0

    def update(self, progress: RunProgress) -> None:
        now = time.monotonic()
        if now - self.last < 1.0:
            return
        self.last = now
        self.bar.update(max(0, progress.env_steps - self.shown))
        self.shown = max(self.shown, progress.env_steps)
        self.bar.set_postfix(success=f"{progress.recent_success():.2f}", updates=progress.updates,
                             lag=f"{progress.lag_mean:.2f}", refresh=False)

    def close(self) -> None:
        self.bar.close()


def memory_report(rss: RssTrack) -> dict:
    """The summary's memory section: data-path buffers, allocations after warm-up, RSS over time."""
    return {**DATA_PATH.report(), **rss.report()}
