"""Success-threshold detection: the efficiency benchmark and run.stop_at_success agree on it."""
from __future__ import annotations

import json

from dvla_hpc.bench.efficiency import steps_to_threshold
from dvla_hpc.lanes.learn import RunProgress
from dvla_hpc.config.schema import Config
from dvla_hpc.runtime.supervise import reached_success, stop_reason


def test_threshold_needs_a_full_window_of_episodes(tmp_path):
    path = tmp_path / "metrics.jsonl"
    records = [{"kind": "update", "episodes": 50, "success_recent": 1.0, "env_steps": 1000},
               {"kind": "lanes", "t": 3.0},
               {"kind": "update", "episodes": 120, "success_recent": 0.7, "env_steps": 2500},
               {"kind": "update", "episodes": 160, "success_recent": 0.85, "env_steps": 3300}]
    path.write_text("\n".join(map(json.dumps, records)) + "\n")
    assert steps_to_threshold(path, 0.8) == 3300
    assert steps_to_threshold(path, 0.9) is None
    # a run stopped by run.stop_at_success between two updates: its end record has the crossing
    records.append({"kind": "end", "reason": "success", "episodes": 170, "success_recent": 0.9,
                    "env_steps": 3400})
    path.write_text("\n".join(map(json.dumps, records)) + "\n")
    assert steps_to_threshold(path, 0.9) == 3400


def test_stop_at_success_waits_for_a_full_window():
    progress = RunProgress()
    progress.successes = [True] * 99
    assert not reached_success(0.8, progress)
    progress.successes += [False]
    assert reached_success(0.8, progress) and not reached_success(0.995, progress)
    assert not reached_success(0.0, progress)  # 0 = never stop on success


def test_stop_reason_names_what_ended_the_run():
    cfg, progress = Config(), RunProgress()
    cfg.run.total_env_steps, cfg.run.wall_clock_limit_s, cfg.run.stop_at_success = 1000, 60.0, 0.5
    assert stop_reason(cfg, progress, 10.0) is None
    assert stop_reason(cfg, progress, 61.0) == "wall clock"
    progress.successes = [True] * 100
    assert stop_reason(cfg, progress, 10.0) == "success"
    progress.env_steps = 1000
    assert stop_reason(cfg, progress, 10.0) == "env steps"
