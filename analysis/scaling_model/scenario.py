"""What one simulation runs: the work per env step, the sizes on the wire, the ranks and the platform.

Lane costs are seconds per env step on the resource the lane runs on (a core for sampling; a core or
a dedicated GPU for inference and learning). Message sizes are bytes per env (observations,
actions) or per env step (episodes)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from dvla_hpc.lanes.flow_credit import flow_budget as coded_budget


@dataclass(frozen=True)
class LaneCosts:
    sample: float
    infer: float
    learn: float


@dataclass(frozen=True)
class Workload:
    envs_per_sampler: int
    max_episode_steps: int
    group_size: int
    groups_per_update: int  # in the whole job, shared by the learners
    flow_budget_groups: int  # flow control: groups that may be untrained at any time
    max_policy_lag: int
    obs_bytes: int  # one env's observation row
    action_bytes: int  # one env's action row
    episode_bytes_per_step: int
    weight_bytes: int  # the flat buffer the tree moves, and the gradient the learners allreduce


def flow_budget(groups_per_update: int, ahead: int, learners: int, samplers: int,
                former: bool = False) -> int:
    """lanes/flow_credit.py's budget (a group per extra learner: its grants keep every learner's
    share); `former`: the rule it replaced, a group per sampler for each extra learner, whose
    spares grow with samplers x learners (what this model found at 512 ranks)."""
    budget = coded_budget(samplers, groups_per_update, learners, ahead)
    return budget - (learners - 1) + (learners - 1) * samplers if former else budget


@dataclass(frozen=True)
class Network:
    bandwidth_Bps: float  # per link (per direction)
    latency_s: float  # per link
    pump_max_sleep_s: float  # the data pumps' backoff ceiling (pipeline.poll_max_sleep_ms)
    tree_max_sleep_s: float  # the tree lanes' backoff ceiling
    loopback_Bps: float  # inside a node: shared memory
    loopback_latency_s: float


@dataclass(frozen=True)
class DataPlaneCost:
    """CPU seconds a rank's pump and lane spend per slab, beyond the lane's own work (measured by
    pump_probe.py), and what a rank costs while it waits (its pump polling)."""
    sim_per_slab: float
    infer_per_slab: float
    idle_cpu_share: float


@dataclass(frozen=True)
class Placement:
    """Ranks by role, each with its node; `infer_for_sim` as `plan_layout` serves them."""
    sims: tuple[int, ...]
    infers: tuple[int, ...]
    learners: tuple[int, ...]
    node_of: tuple[int, ...]
    switch_of: tuple[int, ...]
    infer_for_sim: dict[int, int] = field(hash=False)
    tree: dict = field(hash=False)  # distribution member -> TreeLinks (planes/broadcast_tree.plan_tree)

    @property
    def nodes(self) -> int:
        return max(self.node_of) + 1


@dataclass(frozen=True)
class Scenario:
    mode: Literal["sync", "async"]
    lanes: LaneCosts
    data_plane: DataPlaneCost
    workload: Workload
    network: Network
    placement: Placement
    platform: Literal["machine", "fat_tree"]
    cores_per_node: int
    gpu_lanes: bool  # infer and learn run on a GPU of their own (no CPU contention)
    total_env_steps: int
    steps_per_message: int = 1  # coarser messages for big runs: a slab carries k steps of a half
    broadcast_chunks: int = 16  # the tree pipelines the buffer in this many chunks

    def with_mode(self, mode: str) -> "Scenario":
        return replace(self, mode=mode)
