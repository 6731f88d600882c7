"""The raw-limit benchmark: two spawned processes step and render one Reacher-v5 pixel env each."""
from __future__ import annotations

import pytest

pytest.importorskip("gymnasium")


def test_raw_limit_counts_frames_from_both_processes():
    from dvla_hpc.bench.raw_limit import measure_raw_limit

    result = measure_raw_limit(processes=2, seconds=2.0, warmup_s=0.5, gym_id="Reacher-v5", image_size=64)
    assert result["processes"] == 2
    per = result["per_process"]
    assert len(per) == 2
    assert sorted(r["seed"] for r in per) == [0, 1]
    assert len({r["pid"] for r in per}) == 2
    for r in per:
        assert r["frames"] > 0
        assert r["seconds"] >= 2.0
        assert r["frames_per_second"] > 0
    assert result["frames_per_second"] == pytest.approx(sum(r["frames_per_second"] for r in per), abs=0.05)


def test_raw_limit_rejects_bad_arguments():
    from dvla_hpc.bench.raw_limit import measure_raw_limit

    with pytest.raises(ValueError):
        measure_raw_limit(processes=0, seconds=1.0)
    with pytest.raises(ValueError):
        measure_raw_limit(processes=1, seconds=0.0)


def test_steady_window_leaves_out_warmup():
    from dvla_hpc.bench.reacher import steady_from_points

    # nothing for 10 s, a slow start, then 100 steps/s
    points = [(0.0, 0), (5.0, 0), (10.0, 50), (15.0, 100), (20.0, 600), (25.0, 1100), (30.0, 1600)]
    steady = steady_from_points(points, warmup_s=10.0)
    assert steady["frames_per_second"] == pytest.approx(100.0)
    assert steady["window_s"] == pytest.approx(10.0)
    assert steady_from_points([(0.0, 0), (5.0, 10)], warmup_s=1.0)["frames_per_second"] is None


def test_sample_factory_gets_the_dvla_configs_workers_and_envs():
    from dvla_hpc.bench.reacher import REPO, envs_of

    config = str(REPO / "configs" / "reacher_pixels.yaml")
    workers, envs = envs_of(config, [])
    assert workers >= 1 and envs >= 1
    assert envs_of(config, ["env.envs_per_sampler=12", "env.workers_per_sampler=3"]) == (3, 4)
    with pytest.raises(SystemExit, match="split evenly"):
        envs_of(config, ["env.envs_per_sampler=10", "env.workers_per_sampler=3"])
    with pytest.raises(SystemExit, match="split evenly"):
        envs_of(config, ["env.workers_per_sampler=0"])


def test_worker_cost_charges_each_way_the_cpu_of_its_own_processes():
    """The worker way's frames are rendered in the workers: they, not the parent, carry their CPU."""
    from dvla_hpc.bench.worker_cost import measure

    found = measure(rounds=1, frames=64)
    assert set(found) == {"raw_loop", "inline", "workers", "parent_of_workers"}
    assert min(found["raw_loop"], found["inline"], found["workers"]) > 0.3  # a rendered frame costs ~1.5 ms
    assert found["parent_of_workers"] < found["workers"] / 3


def test_the_shared_work_bound_adds_the_conv_stacks_cost_to_the_raw_limits():
    from dvla_hpc.bench.reacher import compute_ratios
    from dvla_hpc.bench.shared_work import measure

    raw = {"frames_per_second": 2000.0, "per_process": [{"frames_per_second": 800.0}, {"frames_per_second": 1200.0}]}
    bound = measure(raw, 64, act_batch=8, train_batch=32, cores=2, seconds=0.2)
    assert bound["env_ms_per_frame"] == pytest.approx(1.0)  # 2 processes, 2,000 frames/s together
    assert 0 < bound["act_ms_per_frame"] < bound["train_ms_per_frame"]  # backward costs more than acting
    assert bound["cpu_ms_per_frame"] == pytest.approx(1.0 + bound["act_ms_per_frame"] + bound["train_ms_per_frame"])
    assert bound["frames_per_second"] == pytest.approx(2e3 / bound["cpu_ms_per_frame"])
    assert bound["frames_per_second"] < 2000.0
    ratios = compute_ratios({"raw_limit": raw, "sample_factory": {"frames_per_second": 500.0},
                             "dvla_hpc": {"frames_per_second": 600.0}, "shared_work": bound})
    assert ratios["dvla_hpc_of_shared_work_bound"] == pytest.approx(600.0 / bound["frames_per_second"], abs=1e-4)
    assert ratios["dvla_hpc_over_sample_factory"] == 1.2


def test_rounds_alternate_who_goes_first_and_report_the_median_ratio():
    from dvla_hpc.bench.reacher import median_ratios, round_order

    assert round_order(0, skip_sf=False) == ["raw_limit", "sample_factory", "dvla_hpc"]
    assert round_order(1, skip_sf=False) == ["raw_limit", "dvla_hpc", "sample_factory"]
    assert round_order(1, skip_sf=True) == ["raw_limit", "dvla_hpc"]
    rounds = [{"ratios": {"dvla_hpc_over_sample_factory": x, "dvla_hpc_of_raw": 0.5}} for x in (1.3, 0.9, 1.1)]
    rounds.append({"ratios": {"dvla_hpc_of_raw": 0.7}})  # a round whose Sample Factory run failed
    ratios = median_ratios(rounds)
    assert ratios["dvla_hpc_over_sample_factory"] == 1.1
    assert ratios["dvla_hpc_over_sample_factory_range"] == [0.9, 1.3]
    assert ratios["dvla_hpc_of_raw"] == 0.5 and ratios["dvla_hpc_of_raw_range"] == [0.5, 0.7]
    assert median_ratios([{"ratios": {"dvla_hpc_of_raw": 0.6}}]) == {"dvla_hpc_of_raw": 0.6}
