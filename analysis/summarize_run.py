"""Summarise a run directory: python analysis/summarize_run.py RUN_DIR [--plot out.png]

Reads RUN_DIR/trajectories, RUN_DIR/metrics.jsonl and RUN_DIR/summary.json, whichever exist.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.trajectory_stats import (  # noqa: E402
    mean_env_steps,
    mean_episode_length,
    metric_means,
    rolling_success_rate,
    success_by_version,
    success_by_window,
    success_rate,
)
from dvla_hpc.output.episode import EpisodeRecord  # noqa: E402
from dvla_hpc.output.metrics_log import read_metrics  # noqa: E402
from dvla_hpc.output.summary import format_summary_table, read_summary  # noqa: E402
from dvla_hpc.output.trajectory_reader import iter_episodes  # noqa: E402


def describe_episodes(episodes: Sequence[EpisodeRecord]) -> list[str]:
    lines = [f"episodes: {len(episodes)}"]
    if not episodes:
        return lines
    lines.append(f"success rate: {success_rate(episodes):.3f}")
    lines.append(f"mean episode length: {mean_episode_length(episodes):.1f} steps")
    chunks = sorted({episode.action_chunk for episode in episodes})
    if chunks != [1]:
        lines.append(f"mean simulator steps: {mean_env_steps(episodes):.1f} "
                     f"(action chunks of {', '.join(map(str, chunks))})")
    deciles = success_by_window(episodes, num_windows=10)
    lines.append(f"success first 10%: {deciles[0].success_rate:.3f} ({deciles[0].episodes} episodes)")
    lines.append(f"success last 10%: {deciles[-1].success_rate:.3f} ({deciles[-1].episodes} episodes)")
    lines.append("success per decile (training order):")
    for window in deciles:
        span = f"[{window.start:>6}, {window.stop:>6})"
        lines.append(f"  {span}  {window.success_rate:.3f}  n={window.episodes}")
    lines.append("success by policy version:")
    for bucket in success_by_version(episodes):
        versions = f"v{bucket.first_version}-v{bucket.last_version}"
        lines.append(f"  {versions}  {bucket.success_rate:.3f}  n={bucket.episodes}")
    return lines


def plot_success(episodes: Sequence[EpisodeRecord], out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib, which is not installed: pip install matplotlib") from None
    window = max(1, len(episodes) // 20)
    curve = rolling_success_rate(episodes, window)
    figure, axes = plt.subplots(figsize=(7, 4))
    axes.plot(range(1, len(curve) + 1), curve)
    axes.set_xlabel("episode (training order)")
    axes.set_ylabel(f"success rate (trailing {window})")
    axes.set_ylim(-0.02, 1.02)
    figure.tight_layout()
    figure.savefig(out)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--plot", type=Path, help="write a success-rate curve to this image file")
    args = parser.parse_args(argv)
    run_dir: Path = args.run_dir
    if not run_dir.is_dir():
        print(f"error: {run_dir} is not a directory", file=sys.stderr)
        return 2

    trajectories = run_dir / "trajectories"
    episodes = list(iter_episodes(trajectories)) if trajectories.is_dir() else []
    if not trajectories.is_dir():
        print(f"(no trajectories at {trajectories})")
    print("\n".join(describe_episodes(episodes)))

    metrics_path = run_dir / "metrics.jsonl"
    if metrics_path.exists():
        rows = read_metrics(metrics_path)
        print(f"metrics records: {len(rows)}")
        for name, mean in metric_means(rows, "lag").items():
            print(f"mean {name}: {mean:.3f}")

    summary_path = run_dir / "summary.json"
    if summary_path.exists():
        print("run summary:")
        print(format_summary_table(read_summary(summary_path)))

    if args.plot is not None:
        if not episodes:
            print("error: no episodes to plot", file=sys.stderr)
            return 1
        plot_success(episodes, args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
