"""GPU clusters as scenarios: what the predictions assume, in one place.

A node has 8 GPUs, 64 cores and one NIC; 8 ranks per node. `plan_layout` places one learner rank
per 8 ranks (on the last nodes, a GPU each), one infer rank per other node (a GPU) and sim ranks on
the rest (a core each). Inference and gradient costs are FLOP-bound, scaled from the parameter
count; sampling, slab sizes and the data plane's CPU costs are this machine's measurements."""
from __future__ import annotations

from dataclasses import dataclass

from dvla_hpc.config.schema import PipelineConfig
from dvla_hpc.planes.backoff import Backoff

from .placement import place
from .scenario import DataPlaneCost, LaneCosts, Network, Scenario, Workload, flow_budget


@dataclass(frozen=True)
class GpuCluster:
    ranks_per_node: int = 8
    cores_per_node: int = 64
    learn_fraction: int = 8  # one learner rank per this many ranks
    envs_per_sampler: int = 32  # a half of 16 envs: 4 GRPO groups of 4
    tokens_per_step: int = 300  # image patches + instruction + proprio + action tokens (OpenVLA-like)
    gpu_flops: float = 989e12  # bf16 dense, H100/H200 class
    utilisation: float = 0.4  # achieved fraction of gpu_flops (MFU)
    epochs: int = 2  # passes over each update's samples (learn.epochs of the calibrated config)
    bytes_per_param: int = 4  # fp32: the flat buffer the tree moves and the gradient allreduced
    link_latency_s: float = 1e-6
    node_memory_Bps: float = 50e9  # inside a node (shared memory)
    broadcast_chunks: int = 64
    update_rounds: int = 3  # simulated updates (the first fills the pipeline)

    def lane_costs(self, params: float, sample_s: float) -> LaneCosts:
        forward = 2 * params * self.tokens_per_step / (self.gpu_flops * self.utilisation)
        return LaneCosts(sample=sample_s, infer=forward, learn=3 * forward * self.epochs)


def gpu_scenario(cal: dict, ranks: int, params: float, link_gbps: float, mode: str,
                 cluster: GpuCluster = GpuCluster(), former_flow: bool = False) -> Scenario:
    """Each update trains one round: every env's episode (so sync and async train equal batches)."""
    w = cal["workload"]
    placement = place(ranks, max(1, ranks // cluster.learn_fraction), 0, cluster.ranks_per_node,
                      nodes_per_switch=32)
    sims, t = len(placement.sims), w["max_episode_steps"]
    episodes_per_round = sims * cluster.envs_per_sampler
    half = w["envs_per_sampler"] // 2
    groups = episodes_per_round // w["group_size"]
    if groups % len(placement.learners):
        raise ValueError(f"{groups} groups per update do not split over {len(placement.learners)} learners")
    workload = Workload(envs_per_sampler=cluster.envs_per_sampler, max_episode_steps=t,
                        group_size=w["group_size"], groups_per_update=groups,
                        flow_budget_groups=flow_budget(groups, w["flow_versions_ahead"],
                                                       len(placement.learners), sims, former_flow),
                        max_policy_lag=w["max_policy_lag"],
                        obs_bytes=w["obs_bytes"] // half, action_bytes=w["action_bytes"] // half,
                        episode_bytes_per_step=w["episode_bytes_per_step"],
                        weight_bytes=int(cluster.bytes_per_param * params))
    network = Network(bandwidth_Bps=link_gbps * 1e9 / 8, latency_s=cluster.link_latency_s,
                      pump_max_sleep_s=PipelineConfig().poll_max_sleep_ms / 1000,
                      tree_max_sleep_s=Backoff().max_sleep_s,
                      loopback_Bps=cluster.node_memory_Bps, loopback_latency_s=cal["mpi"]["latency_s"])
    dp = cal["data_plane"]
    return Scenario(mode=mode, lanes=cluster.lane_costs(params, cal["lanes"]["sample"]["cpu_per_step_s"]),
                    data_plane=DataPlaneCost(dp["sim_cpu_per_round_trip_s"], dp["infer_cpu_per_round_trip_s"],
                                             dp["idle_cpu_share"]),
                    workload=workload, network=network, placement=placement, platform="fat_tree",
                    cores_per_node=cluster.cores_per_node, gpu_lanes=True,
                    total_env_steps=cluster.update_rounds * episodes_per_round * t,
                    steps_per_message=t, broadcast_chunks=cluster.broadcast_chunks)
