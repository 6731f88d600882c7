"""This machine as a scenario: the calibration's lane costs on its cores, its MPI as the links."""
from __future__ import annotations

import json
from pathlib import Path

from dvla_hpc.planes.backoff import Backoff

from .scenario import DataPlaneCost, LaneCosts, Network, Placement, Scenario, Workload, flow_budget

CALIBRATION = Path(__file__).with_name("calibration.json")


def load_calibration(path: Path = CALIBRATION) -> dict:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run python -m analysis.scaling_model.calibrate")
    return json.loads(path.read_text())


def machine_scenario(cal: dict, placement: Placement, total_env_steps: int, mode: str = "async",
                     steps_per_message: int = 1) -> Scenario:
    """Lanes cost their measured CPU seconds per env step (single-threaded lanes: CPU = wall), and
    every rank competes for the measured cores."""
    lanes = cal["lanes"]
    w = cal["workload"]
    mpi = cal["mpi"]
    half = w["envs_per_sampler"] // 2
    network = Network(bandwidth_Bps=mpi["bandwidth_Bps"], latency_s=mpi["latency_s"],
                      pump_max_sleep_s=w["poll_max_sleep_s"], tree_max_sleep_s=Backoff().max_sleep_s,
                      loopback_Bps=mpi["bandwidth_Bps"], loopback_latency_s=mpi["latency_s"])
    workload = Workload(envs_per_sampler=w["envs_per_sampler"], max_episode_steps=w["max_episode_steps"],
                        group_size=w["group_size"], groups_per_update=w["groups_per_update"],
                        flow_budget_groups=flow_budget(w["groups_per_update"], w["flow_versions_ahead"],
                                                       len(placement.learners), len(placement.sims)),
                        max_policy_lag=w["max_policy_lag"],
                        obs_bytes=w["obs_bytes"] // half, action_bytes=w["action_bytes"] // half,
                        episode_bytes_per_step=w["episode_bytes_per_step"], weight_bytes=w["weight_bytes"])
    costs = LaneCosts(*(lanes[name]["cpu_per_step_s"] for name in ("sample", "infer", "learn")))
    dp = cal["data_plane"]
    data_plane = DataPlaneCost(dp["sim_cpu_per_round_trip_s"], dp["infer_cpu_per_round_trip_s"],
                               dp["idle_cpu_share"])
    return Scenario(mode=mode, lanes=costs, data_plane=data_plane, workload=workload, network=network,
                    placement=placement, platform="machine", cores_per_node=cal["cores"], gpu_lanes=False,
                    total_env_steps=total_env_steps, steps_per_message=steps_per_message)
