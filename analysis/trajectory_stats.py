"""Pure statistics over finished episodes, for run summaries and plots.

"Training order" is the order in which the policy improved: episodes sorted by the policy version
that produced their first action (stable, so ties keep their (rank, episode_id) order). Episodes
carry no wall-clock time, and ranks run concurrently, so this is the best proxy for progress.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from dvla_hpc.output.episode import EpisodeRecord


@dataclass(frozen=True)
class WindowStat:
    start: int  # first position in training order, inclusive
    stop: int  # last position, exclusive
    episodes: int
    success_rate: float


@dataclass(frozen=True)
class VersionBucket:
    first_version: int
    last_version: int  # inclusive
    episodes: int
    success_rate: float


def training_order(episodes: Sequence[EpisodeRecord]) -> list[EpisodeRecord]:
    return sorted(episodes, key=lambda episode: int(episode.policy_versions[0]))


def success_rate(episodes: Sequence[EpisodeRecord]) -> float:
    return sum(episode.success for episode in episodes) / len(episodes) if episodes else math.nan


def mean_episode_length(episodes: Sequence[EpisodeRecord]) -> float:
    """In policy decisions (one per action chunk)."""
    return float(np.mean([episode.num_steps for episode in episodes])) if episodes else math.nan


def mean_env_steps(episodes: Sequence[EpisodeRecord]) -> float:
    """In simulator steps (an action chunk of k takes up to k)."""
    return float(np.mean([episode.num_env_steps for episode in episodes])) if episodes else math.nan


def success_by_window(episodes: Sequence[EpisodeRecord], num_windows: int = 10) -> list[WindowStat]:
    """Success rate in `num_windows` near-equal consecutive slices of training order; empty slices omitted."""
    if num_windows < 1:
        raise ValueError(f"num_windows must be >= 1, got {num_windows}")
    ordered = training_order(episodes)
    count = len(ordered)
    windows = []
    for index in range(num_windows):
        start, stop = index * count // num_windows, (index + 1) * count // num_windows
        if stop > start:
            windows.append(WindowStat(start, stop, stop - start, success_rate(ordered[start:stop])))
    return windows


def dominant_version(episode: EpisodeRecord) -> int:
    """The policy version that produced most of the episode's actions (the older one on a tie)."""
    versions, counts = np.unique(episode.policy_versions, return_counts=True)
    return int(versions[np.argmax(counts)])


def success_by_version(
    episodes: Sequence[EpisodeRecord], bucket_size: int | None = None, num_buckets: int = 10
) -> list[VersionBucket]:
    """Success rate per range of dominant policy version; by default ~num_buckets equal-width ranges."""
    if not episodes:
        return []
    versions = np.array([dominant_version(episode) for episode in episodes])
    low, high = int(versions.min()), int(versions.max())
    if bucket_size is None:
        bucket_size = max(1, math.ceil((high - low + 1) / num_buckets))
    if bucket_size < 1:
        raise ValueError(f"bucket_size must be >= 1, got {bucket_size}")
    buckets = (versions - low) // bucket_size
    result = []
    for bucket in np.unique(buckets):
        members = [episode for episode, b in zip(episodes, buckets) if b == bucket]
        first = low + int(bucket) * bucket_size
        result.append(VersionBucket(first, first + bucket_size - 1, len(members), success_rate(members)))
    return result


def rolling_success_rate(episodes: Sequence[EpisodeRecord], window: int) -> np.ndarray:
    """Trailing mean of success over `window` episodes in training order (shorter at the start)."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    successes = np.array([episode.success for episode in training_order(episodes)], dtype=np.float64)
    cumulative = np.concatenate([[0.0], np.cumsum(successes)])
    ends = np.arange(1, len(successes) + 1)
    starts = np.maximum(0, ends - window)
    return (cumulative[ends] - cumulative[starts]) / (ends - starts)


def metric_means(rows: Sequence[dict[str, Any]], name_contains: str) -> dict[str, float]:
    """Mean of every numeric top-level metric whose name contains `name_contains` (e.g. "lag")."""
    values: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            if name_contains in key and isinstance(value, (int, float)) and not isinstance(value, bool):
                values.setdefault(key, []).append(float(value))
    return {key: float(np.mean(found)) for key, found in sorted(values.items())}
