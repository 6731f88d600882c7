"""The throughput benchmark's parts: lane probes, the performance model, steady-state rates."""
from __future__ import annotations

import json
import threading

import psutil
import pytest

from dvla_hpc.bench.lane_costs import LaneCost, cold_infer_cost, measure, model_bounds
from dvla_hpc.bench.throughput import lane_cpu_per_step, role_cpu_per_step, steady_load, steady_rates
from dvla_hpc.config.schema import Config


def test_model_sums_lanes_for_sync_and_takes_the_slowest_lane_or_the_cores_for_async():
    costs = {"sample": LaneCost(0.001, 0.002, 10), "infer": LaneCost(0.002, 0.002, 10),
             "learn": LaneCost(0.004, 0.004, 10)}
    m = model_bounds(costs, cores=16)
    assert m["sync_steps_per_s"] == pytest.approx(1 / 0.007)
    assert m["async_steps_per_s"] == pytest.approx(1 / 0.004) and m["async_limited_by"] == "learn lane"
    m = model_bounds(costs, cores=1)  # 8 ms of CPU per step on one core
    assert m["async_steps_per_s"] == pytest.approx(1 / 0.008) and m["async_limited_by"] == "cores"
    m = model_bounds(costs, cores=16, parallelism={"learn": 4})
    assert m["async_steps_per_s"] == pytest.approx(1 / 0.002) and m["async_limited_by"] == "infer lane"


def test_probes_time_each_lane_alone():
    cfg = Config()
    cfg.env.image_size, cfg.model.patch_size, cfg.env.envs_per_sampler = 16, 8, 4
    cfg.env.workers_per_sampler, cfg.env.max_episode_steps = 1, 25
    cfg.learn.group_size, cfg.learn.groups_per_update = 2, 1
    threads = threading.active_count()
    costs = measure(cfg, seconds=0.3)
    workers = [p for p in psutil.Process().children() if "resource_tracker" not in " ".join(p.cmdline())]
    assert threading.active_count() == threads and not workers  # the lanes and env workers are gone
    assert set(costs) == {"sample", "infer", "learn"}
    for cost in costs.values():
        assert cost.steps > 0 and cost.wall_per_step > 0 and cost.cpu_per_step > 0
    assert costs["learn"].steps % cfg.env.max_episode_steps == 0  # whole synthetic episodes


def test_the_cold_infer_probe_rewrites_its_buffer_outside_the_timing():
    import time

    import numpy as np

    cfg = Config()
    cfg.env.image_size, cfg.model.patch_size, cfg.env.envs_per_sampler = 16, 8, 4
    evict_mib = 256
    buffer = np.zeros((evict_mib << 20) // 8)
    started = time.perf_counter()
    buffer += 1.0
    rewrite_s = time.perf_counter() - started
    cost = cold_infer_cost(cfg, seconds=1.0, evict_mib=evict_mib)
    half = cfg.env.envs_per_sampler // 2
    assert cost.steps >= half and cost.steps % half == 0
    assert cost.wall_per_step * half < rewrite_s / 2  # a call's time holds none of the rewrite's


def test_steady_rates_skip_the_warmup_share(tmp_path):
    path = tmp_path / "metrics.jsonl"
    records = [{"kind": "update", "t": 10.0 * i, "env_steps": 100 * i + (500 if i else 0),
                "samples": 100, "lag_mean": 1.0} for i in range(6)]
    path.write_text("\n".join(json.dumps(r) for r in [{"kind": "lanes", "t": 1.0}, *records]) + "\n")
    rates = steady_rates(path, warmup_share=0.2)
    assert rates["env_steps_per_s"] == pytest.approx(10.0)  # the start-up burst of 500 is left out
    assert rates["trained_samples_per_s"] == pytest.approx(10.0) and rates["lag_mean"] == 1.0
    path.write_text(json.dumps(records[0]) + "\n")
    with pytest.raises(SystemExit, match="only 1 updates"):
        steady_rates(path, 0.2)


def test_steady_load_weighs_the_lanes_records_inside_the_window(tmp_path):
    path = tmp_path / "metrics.jsonl"

    def lanes(t, host, *ranks):
        return {"kind": "lanes", "t": t, "host_cpu_busy_percent": host,
                "ranks": {str(i): {"cpu_percent": c} for i, c in enumerate(ranks)}}

    # the 8 s record's interval began at 2 s, before the window: left out
    records = [lanes(2.0, 10.0, 50.0), lanes(8.0, 10.0, 50.0), lanes(12.0, 100.0, 150.0, 50.0),
               lanes(20.0, 70.0, 100.0, 40.0), {"kind": "update", "t": 21.0}]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    load = steady_load(path, window_start_t=5.0, env_steps_per_s=100.0)
    assert load["host_busy_share"] == pytest.approx((4 * 1.0 + 8 * 0.7) / 12)
    assert load["job_cores"] == pytest.approx((4 * 2.0 + 8 * 1.4) / 12)
    assert load["job_cpu_ms_per_step"] == pytest.approx(1e3 * load["job_cores"] / 100.0)
    assert steady_load(path, window_start_t=9.0, env_steps_per_s=100.0) == {}  # one record: too few


def test_lane_cpu_per_step_takes_the_steady_window_where_the_records_have_the_lane_else_the_whole_run(tmp_path):
    path = tmp_path / "metrics.jsonl"

    def lanes(t, env_steps, learn_cpu, sample_cpu, worker_ms):
        return {"kind": "lanes", "t": t, "env_steps": env_steps,
                "learn": {"cpu_seconds": learn_cpu, "counters": {"checkpoints": 0}},
                "sample": {"cpu_seconds": sample_cpu, "counters": {"worker_cpu_ms": worker_ms}}}

    # the 2 s record lies before the window; the sample lane's env workers count with it
    records = [lanes(2.0, 0, 0.5, 0.1, 100), lanes(6.0, 1000, 1.0, 0.2, 400), lanes(11.0, 3000, 2.4, 0.4, 1200)]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    summary = {"env_steps": 4000, "lanes": {"learn": {"cpu_seconds": 3.0}, "sample": {"cpu_seconds": 0.5},
                                            "infer": {"cpu_seconds": 2.0}}}
    cpu = lane_cpu_per_step(path, summary, window_start_t=5.0)
    assert cpu["steady"] == {"learn": pytest.approx(0.7), "sample": pytest.approx(1e3 * (0.2 + 0.8) / 2000)}
    assert cpu["whole_run"] == {"infer": pytest.approx(0.5)}  # under MPI only the learner rank's lanes are logged
    assert lane_cpu_per_step(path, summary, window_start_t=7.0)["whole_run"]["learn"] == pytest.approx(0.75)


def test_role_cpu_per_step_takes_each_ranks_rate_between_its_first_and_last_totals_in_the_window(tmp_path):
    path = tmp_path / "metrics.jsonl"

    def status(role, seconds, cpu, lanes_cpu):
        return {"role": role, "cpu_percent": 0.0, "seconds": seconds, "cpu_seconds": cpu, "lanes_cpu_seconds": lanes_cpu}

    # rank 1's totals come from its heartbeats, on its own clock; the 2 s record lies before the window
    records = [{"kind": "lanes", "t": 2.0, "ranks": {"0": status("learn", 2.0, 0.0, 0.0), "1": status("sim", 50.0, 0.0, 0.0)}},
               {"kind": "lanes", "t": 6.0, "ranks": {"0": status("learn", 6.0, 4.0, 3.0), "1": status("sim", 53.0, 1.0, 0.5),
                                                     "2": status("sim", 9.0, 1.0, 1.0)}},
               {"kind": "lanes", "t": 16.0, "ranks": {"0": status("learn", 16.0, 12.0, 9.0), "1": status("sim", 58.0, 2.0, 1.0),
                                                      "2": status("sim", 19.0, 6.0, 3.0), "3": {"cpu_percent": 80.0}}}]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    roles = role_cpu_per_step(path, window_start_t=5.0, env_steps_per_s=200.0)
    assert roles["learn"] == {"ranks": 1, "process": pytest.approx(4.0), "lanes": pytest.approx(3.0),
                              "outside_lanes": pytest.approx(1.0)}  # 0.8 cores over 200 steps/s
    assert roles["sim"]["ranks"] == 2  # rank 3 carries no totals: left out
    assert roles["sim"]["process"] == pytest.approx(1e3 * (1.0 / 5 + 5.0 / 10) / 200)
    assert roles["sim"]["lanes"] == pytest.approx(1e3 * (0.5 / 5 + 2.0 / 10) / 200)
    assert role_cpu_per_step(path, window_start_t=10.0, env_steps_per_s=200.0) == {}  # one record: no span


def test_rounds_alternate_the_run_order_and_report_medians_of_in_round_fractions(tmp_path, monkeypatch):
    from dvla_hpc.bench import throughput

    variants = [("local", []), ("mpi4", ["mpiexec", "-n", "4"])]
    first, second = throughput.run_order(variants, 0), throughput.run_order(variants, 1)
    assert [(label, mode) for label, _, mode in first] == [
        ("local", "sync"), ("local", "async"), ("mpi4", "sync"), ("mpi4", "async")]
    assert second == first[::-1]

    probes = iter([0.004, 0.002, 0.004])  # the learn lane's ms a step, per round: the model moves
    started: list[str] = []

    def measure(cfg, seconds):
        learn = next(probes)
        return {"sample": LaneCost(0.001, 0.001, 10), "infer": LaneCost(0.001, 0.001, 10),
                "learn": LaneCost(learn, learn, 10)}

    def run_main(label, prefix, args, run_dir, timeout_s):
        started.append(label)
        return {"lanes": {"learn": {"busy": 0.5, "breakdown": {"compute": 0.5}}}, "wall_seconds": 1.0}

    def steady_rates(path, warmup_share):  # every run at 100 steps/s: the fractions follow the model
        return {"env_steps_per_s": 100.0, "trained_samples_per_s": 100.0, "lag_mean": 0.0, "window_start_t": 1.0}

    def steady_load(path, window_start_t, env_steps_per_s):
        return {"host_busy_share": 0.9, "job_cores": 1.8, "job_cpu_ms_per_step": 18.0}

    monkeypatch.setattr(throughput, "measure", measure)
    monkeypatch.setattr(throughput, "run_main", run_main)
    monkeypatch.setattr(throughput, "steady_rates", steady_rates)
    monkeypatch.setattr(throughput, "steady_load", steady_load)
    monkeypatch.setattr(throughput, "cold_infer_cost", lambda cfg, seconds, evict_mib: LaneCost(0.002, 0.002, 10))
    monkeypatch.setattr(throughput, "lane_cpu_per_step", lambda path, summary, window_start_t: {
        "steady": {"learn": 0.5}, "whole_run": {"sample": 0.4}})
    monkeypatch.setattr(throughput, "role_cpu_per_step", lambda path, window_start_t, env_steps_per_s: {
        "local": {"ranks": 1, "process": 1.2, "lanes": 1.0, "outside_lanes": 0.2}})
    assert throughput.main(["--out", str(tmp_path), "--rounds", "3", "--ranks", "4"]) == 0
    assert started[:4] == ["local-sync", "local-async", "mpi4-sync", "mpi4-async"]
    assert started[4:8] == started[:4][::-1]
    report = json.loads((tmp_path / "throughput.json").read_text())
    fractions = [r["ratios"]["local-async_of_model"] for r in report["rounds"]]
    bounds = [r["model"]["async_steps_per_s"] for r in report["rounds"]]  # cores=1 or more: 1/max lane
    assert fractions == pytest.approx([100.0 / b for b in bounds])
    assert report["median"]["local-async_of_model"] == pytest.approx(sorted(fractions)[1], abs=1e-4)
    assert report["median"]["local-async_of_model_range"] == [min(fractions), max(fractions)]
    assert report["median"]["mpi4_async_over_sync"] == pytest.approx(1.0)
