"""`python -m dvla_hpc.main --plan [--ranks N]`: the layout, roles, devices and memory plans of a
run, printed without training or allocating the model (parameters are counted on the meta device).

For N ranks it plans as `mpiexec -n N` would on nodes like this one: `layout.ranks_per_node`
emulates the nodes (default: all N on this node), and each node is assumed to show as many GPUs
as this one does, or `--gpus-per-node` (to plan a GPU job from a login node without GPUs)."""
from __future__ import annotations

import torch

from dvla_hpc.config.schema import Config
from dvla_hpc.runtime.blueprint import Blueprint, check_learner_split, episode_budget
from dvla_hpc.runtime.devices import device_kind, gpu_assignment, local_device, visible_gpus
from dvla_hpc.runtime.memory_check import rank_plan
from dvla_hpc.runtime.topology import RolePlan, plan_layout


def plan_devices(cfg: Config, plan: RolePlan, gpus_per_node: int | None) -> dict[int, torch.device]:
    gpus = 0 if cfg.run.device == "cpu" else visible_gpus() if gpus_per_node is None else gpus_per_node
    gpu_ranks = {r: gpus for r in range(plan.world_size) if plan.roles[r] in ("infer", "learn")}
    if device_kind(cfg.run.device, gpu_ranks) == "cpu":
        return {r: torch.device("cpu") for r in range(plan.world_size)}
    gpu_of = gpu_assignment(plan, {node: gpus for node in set(plan.node_of)})
    return {r: torch.device("cuda", gpu_of[r]) if r in gpu_of else torch.device("cpu")
            for r in range(plan.world_size)}


def describe_plan(cfg: Config, ranks: int, gpus_per_node: int | None = None) -> str:
    bp = Blueprint.from_config(cfg)
    if ranks == 1:
        device = local_device(cfg.run.device) if gpus_per_node is None else \
            torch.device("cuda", 0) if gpus_per_node and cfg.run.device != "cpu" else torch.device("cpu")
        memory = rank_plan(bp, "local", device, samplers=1)
        return "\n".join(["layout: 1 process, every lane a thread (single-process mode)",
                          f"device: {device}", memory.format()])
    per_node = cfg.layout.ranks_per_node or ranks
    node_of = [r // per_node for r in range(ranks)]
    per_switch = cfg.layout.nodes_per_switch or len(set(node_of))
    plan = plan_layout(ranks, cfg.layout.learn_ranks, cfg.layout.infer_ranks, node_of,
                       [n // per_switch for n in node_of])
    sims = plan.ranks("sim")
    episode_budget(cfg, len(sims))
    check_learner_split(cfg, len(sims))
    devices = plan_devices(cfg, plan, gpus_per_node)
    lines = [f"layout: {plan.describe()}"]
    for role in ("learn", "infer", "sim"):
        ranks_of_role = plan.ranks(role)
        first = ranks_of_role[0]
        placed = ", ".join(f"{r}:{devices[r]}" for r in ranks_of_role[:16])
        more = f" ... ({len(ranks_of_role)} ranks)" if len(ranks_of_role) > 16 else ""
        lines.append(f"{role} ranks -> devices: {placed}{more}")
        samplers = len(plan.sims_for(first)) if role == "infer" else len(sims)
        memory = rank_plan(bp, role, devices[first], samplers, len(plan.ranks("learn")),
                           len(plan.ranks("infer")))
        lines.append(memory.format())
    return "\n".join(lines)
