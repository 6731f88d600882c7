"""Run analysis: windowed and per-version success statistics and the summarize_run CLI."""
from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis import summarize_run
from analysis.trajectory_stats import (
    dominant_version,
    metric_means,
    rolling_success_rate,
    success_by_version,
    success_by_window,
)
from dvla_hpc.output.episode import EpisodeRecord
from dvla_hpc.output.metrics_log import MetricsLog
from dvla_hpc.output.summary import write_summary
from dvla_hpc.output.trajectory_writer import TrajectoryWriter

REPO_ROOT = Path(__file__).resolve().parents[1]


def episode(versions: list[int], success: bool, steps: int | None = None) -> EpisodeRecord:
    steps = steps or len(versions)
    versions = (versions * steps)[:steps]
    return EpisodeRecord(
        images=np.zeros((steps, 1, 4, 4, 3), dtype=np.uint8),
        proprio=np.zeros((steps, 2), dtype=np.float32),
        actions=np.zeros((steps, 2), dtype=np.float32),
        rewards=np.full(steps, float(success), dtype=np.float32),
        dones=np.arange(steps) == steps - 1,
        policy_versions=np.asarray(sorted(versions), dtype=np.int64),
        task="tabletop",
        instruction="stack the cubes",
        success=success,
        seed=0,
    )


def improving_run(count: int = 20) -> list[EpisodeRecord]:
    """Policy version i produced episode i; the first half fails, the second half succeeds."""
    return [
        episode([version], success=version >= count // 2, steps=version % 5 + 1) for version in range(count)
    ]


def test_success_by_window_follows_training_order_not_input_order() -> None:
    episodes = improving_run()
    random.Random(0).shuffle(episodes)
    windows = success_by_window(episodes, num_windows=10)
    assert [window.episodes for window in windows] == [2] * 10
    assert [window.success_rate for window in windows] == [0.0] * 5 + [1.0] * 5


def test_success_by_window_covers_every_episode_with_uneven_sizes() -> None:
    episodes = [episode([v], success=v in (0, 6)) for v in range(7)]
    windows = success_by_window(episodes, num_windows=3)
    assert [(w.start, w.stop) for w in windows] == [(0, 2), (2, 4), (4, 7)]
    assert [w.success_rate for w in windows] == [0.5, 0.0, pytest.approx(1 / 3)]
    assert len(success_by_window(episodes[:2], num_windows=10)) == 2  # empty windows are omitted


def test_success_by_version_buckets_by_dominant_version() -> None:
    assert dominant_version(episode([3, 3, 9], success=True)) == 3
    episodes = [
        episode([0, 0, 7], success=False),  # dominant 0
        episode([4], success=True),
        episode([5, 5, 5, 1], success=True),  # dominant 5
        episode([9], success=False),
    ]
    buckets = success_by_version(episodes, bucket_size=5)
    assert [(b.first_version, b.last_version, b.episodes) for b in buckets] == [(0, 4, 2), (5, 9, 2)]
    assert [b.success_rate for b in buckets] == [0.5, 0.5]
    assert success_by_version([]) == []


def test_rolling_success_rate_is_a_trailing_mean() -> None:
    episodes = [episode([v], success=s) for v, s in enumerate([True, False, True, True])]
    assert rolling_success_rate(episodes, window=2).tolist() == [1.0, 0.5, 0.5, 1.0]


def test_metric_means_picks_numeric_matching_keys() -> None:
    rows = [{"policy_lag": 2, "lag_ok": True, "loss": 1.0}, {"policy_lag": 3.0}, {"lag_max": 7}]
    assert metric_means(rows, "lag") == {"lag_max": 7.0, "policy_lag": 2.5}


def make_run_dir(run_dir: Path) -> None:
    trajectories = run_dir / "trajectories"
    with TrajectoryWriter(trajectories, rank=0, env_name="tabletop", episodes_per_shard=6) as writer:
        for record in improving_run():
            writer.write_episode(record)
    with MetricsLog(run_dir / "metrics.jsonl") as log:
        log.log({"step": 1, "policy_lag": np.float32(2.0)})
        log.log({"step": 2, "policy_lag": 3})
    write_summary(run_dir / "summary.json", {"episodes": 20, "lanes": {"infer": {"busy": 0.75}}})


def test_cli_reports_windows_versions_lag_and_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_run_dir(tmp_path)
    assert summarize_run.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "episodes: 20" in out
    assert "success rate: 0.500" in out
    assert "success first 10%: 0.000 (2 episodes)" in out
    assert "success last 10%: 1.000 (2 episodes)" in out
    assert "mean episode length: 3.0 steps" in out
    assert "v0-v1  0.000  n=2" in out and "v18-v19  1.000  n=2" in out
    assert "mean policy_lag: 2.500" in out
    assert "lanes.infer.busy" in out


def test_chunked_episodes_report_simulator_steps() -> None:
    episodes = [episode([0], success=True, steps=4) for _ in range(2)]
    for record, executed in zip(episodes, ([3, 3, 3, 1], [3, 3, 3, 3])):
        record.action_chunk, record.env_steps = 3, np.asarray(executed, np.int32)
    lines = summarize_run.describe_episodes(episodes)
    assert "mean episode length: 4.0 steps" in lines
    assert "mean simulator steps: 11.0 (action chunks of 3)" in lines
    assert not any("simulator" in line for line in summarize_run.describe_episodes(improving_run()))


def test_cli_runs_as_a_script_from_anywhere(tmp_path: Path) -> None:
    make_run_dir(tmp_path)
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "analysis" / "summarize_run.py"), str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "episodes: 20" in result.stdout


def test_cli_plot_without_matplotlib_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    make_run_dir(tmp_path)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    with pytest.raises(SystemExit, match="pip install matplotlib"):
        summarize_run.main([str(tmp_path), "--plot", str(tmp_path / "curve.png")])
    assert not (tmp_path / "curve.png").exists()


def test_cli_plot_writes_an_image(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    make_run_dir(tmp_path)
    assert summarize_run.main([str(tmp_path), "--plot", str(tmp_path / "curve.png")]) == 0
    assert (tmp_path / "curve.png").stat().st_size > 0


def test_cli_rejects_a_missing_run_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert summarize_run.main([str(tmp_path / "absent")]) == 2
    assert "absent is not a directory" in capsys.readouterr().err
