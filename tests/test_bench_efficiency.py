"""Success-threshold detection: the efficiency benchmark and run.stop_at_success agree on it."""
from __future__ import annotations

import json

from dvla_hpc.bench.efficiency import compare, seed_runs, steps_to_threshold
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


def test_only_the_first_seeds_async_run_goes_past_the_threshold():
    runs = [seed_runs("configs/quickstart.yaml", ["learn.lr=0.001"], 0.8, seed, ["sync", "async"], 300, 900)
            for seed in range(2)]
    for seed, by_mode in enumerate(runs):
        for args in by_mode.values():
            assert f"run.seed={seed}" in args and "learn.lr=0.001" in args
        assert "run.stop_at_success=0.8" in by_mode["sync"] and "run.wall_clock_limit_s=900" in by_mode["sync"]
    assert not any(a.startswith("run.stop_at_success") for a in runs[0]["async"])
    assert "run.stop_at_success=0.8" in runs[1]["async"]
    assert list(seed_runs("c.yaml", [], 0.8, 0, ["async"], 300, 900)) == ["async"]


def test_the_comparison_is_the_ratio_of_mean_steps_over_seeds_both_modes_finished():
    def run(steps, rate):
        return {"steps_to_threshold": steps, "env_steps_per_second": rate}
    seeds = [{"sync": run(10_000, 100.0), "async": run(14_000, 120.0)},
             {"sync": run(12_000, 90.0), "async": run(12_000, 95.0)},
             {"sync": run(9_000, 100.0), "async": run(None, 100.0)}]  # async never got there: left out
    c = compare(seeds)
    assert c["seeds_compared"] == 2
    assert c["async_steps_over_sync"] == 26_000 / 22_000
    assert c["per_seed_async_steps_over_sync"] == [1.4, 1.0]
    assert c["async_rate_over_sync"] == 1.2  # seed 0's long async run against its sync run
    assert compare([{"sync": run(None, 1.0)}]) == {"seeds_compared": 0}
