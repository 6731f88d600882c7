"""Progress bar while the run goes, summary.json and the summary table at its end."""
from __future__ import annotations

import sys
import time

from tqdm import tqdm

from dvla_hpc.lanes.learn import RunProgress
from dvla_hpc.memory.accounting import DATA_PATH, RssTrack


def window_rate(values: list[bool], first: bool) -> float:
    if not values:
        return 0.0
    k = max(1, len(values) // 10)
    part = values[:k] if first else values[-k:]
    return round(sum(part) / len(part), 4)


def build_summary(progress: RunProgress, wall_seconds: float, lanes: dict, extra: dict) -> dict:
    return {
        "env_steps": progress.env_steps,
        "wall_seconds": round(wall_seconds, 3),
        "env_steps_per_second": round(progress.env_steps / max(wall_seconds, 1e-9), 2),
        "episodes": progress.episodes,
        "failed_episodes": progress.failed_episodes,
        "success_rate_first": window_rate(progress.successes, first=True),
        "success_rate_last": window_rate(progress.successes, first=False),
        "updates": progress.updates,
        "samples_trained": progress.samples_trained,
        "samples_dropped_stale": progress.dropped_stale,
        "policy_lag_mean": round(progress.lag_mean, 4),
        "lanes": lanes,
        **extra,
    }


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
