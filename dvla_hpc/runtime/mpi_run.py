"""MPI mode: plan roles and devices over the world, build communicators and planes, run this
rank's role. Every refusal (layout, config, devices, memory) is decided alike on every rank
before anything is allocated, and ends the job with exit code 2. Devices are named ("cpu",
"cuda:1") until a rank that computes makes its own torch device: sim ranks import no torch."""
from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from mpi4py import MPI

from dvla_hpc.config.loader import ConfigError
from dvla_hpc.config.schema import Config
from dvla_hpc.memory.accounting import DATA_PATH
from dvla_hpc.memory.plan import PlanRefused
from dvla_hpc.output.telemetry import Telemetry
from dvla_hpc.planes.backoff import wait_requests
from dvla_hpc.planes.control import ControlPlane
from dvla_hpc.planes.data_pump import DataPump
from dvla_hpc.roles.common import RankContext
from dvla_hpc.runtime.blueprint import Blueprint, check_learner_split, episode_budget
from dvla_hpc.runtime.core_share import pump_first_sleep_s
from dvla_hpc.runtime.devices import (GPU_ROLES, DeviceError, data_backend, device_kind, gpu_assignment,
                                      visible_gpus)
from dvla_hpc.runtime.memory_check import check_memory_plan
from dvla_hpc.runtime.run_dir import prepare_run_dir
from dvla_hpc.runtime.signals import StopRequest
from dvla_hpc.runtime.topology import (LayoutError, RolePlan, build_communicators, detect_placement,
                                       gather_hostnames, plan_layout)

if TYPE_CHECKING:
    import torch


class PlacementRefused(SystemExit):
    pass


def plan_roles(cfg: Config, world: MPI.Comm) -> RolePlan:
    node_of, switch_of = detect_placement(world, cfg.layout.ranks_per_node, cfg.layout.nodes_per_switch)
    plan = plan_layout(world.Get_size(), cfg.layout.learn_ranks, cfg.layout.infer_ranks, node_of, switch_of)
    episode_budget(cfg, len(plan.ranks("sim")))
    check_learner_split(cfg, len(plan.ranks("sim")))
    return plan


def place_devices(cfg: Config, world: MPI.Comm, plan: RolePlan) -> dict[int, str]:
    """Every rank's device name. Only infer and learner ranks ask CUDA how many GPUs they see."""
    rank = world.Get_rank()
    asks = plan.roles[rank] in GPU_ROLES and cfg.run.device != "cpu"
    mine = np.array([visible_gpus() if asks else -1], dtype=np.int64)
    seen = np.empty(world.Get_size(), dtype=np.int64)
    wait_requests(world.Iallgather(mine, seen), what="GPU count gather")
    gpu_ranks = {r: int(seen[r]) for r in range(plan.world_size) if plan.roles[r] in GPU_ROLES}
    if device_kind(cfg.run.device, gpu_ranks) == "cpu":
        return dict.fromkeys(range(plan.world_size), "cpu")
    per_node = {plan.node_of[r]: count for r, count in gpu_ranks.items()}
    gpu_of = gpu_assignment(plan, per_node)
    return {r: f"cuda:{gpu_of[r]}" if r in gpu_of else "cpu" for r in range(plan.world_size)}


def refuse(world: MPI.Comm, message: str | None, kind: str) -> None:
    """Collective: if any rank has a message, the lowest such rank prints it and all exit 2."""
    mine = np.array([world.Get_rank() if message else world.Get_size()], dtype=np.int64)
    first = np.empty(1, dtype=np.int64)
    wait_requests(world.Iallreduce(mine, first, op=MPI.MIN), what="refusal vote")
    if first[0] < world.Get_size():
        if message and world.Get_rank() == first[0]:
            print(f"{kind} error: {message}", file=sys.stderr)
        raise PlacementRefused(2)


def run_mpi(cfg: Config, run_dir: Path, world: MPI.Comm, stop_request: StopRequest) -> dict | None:
    try:  # every rank plans alike, so every rank refuses alike
        plan = plan_roles(cfg, world)
        devices = place_devices(cfg, world, plan)
        backend = data_backend(cfg.planes.data_backend, devices, plan)
        bp = Blueprint.from_config(cfg)
    except (LayoutError, ConfigError, DeviceError) as err:
        if world.Get_rank() == 0:
            kind = {LayoutError: "layout", ConfigError: "config", DeviceError: "device"}[type(err)]
            print(f"{kind} error: {err}", file=sys.stderr)
        raise PlacementRefused(2) from None
    rank = world.Get_rank()
    role = plan.roles[rank]
    device = compute_device(devices[rank], cfg.run.torch_threads) if role in GPU_ROLES else None
    DATA_PATH.configure(pin=device is not None and device.type == "cuda")
    refusal = None
    try:
        samplers = len(plan.sims_for(rank)) if role == "infer" else len(plan.ranks("sim"))
        check_memory_plan(bp, role, device, samplers, learners=len(plan.ranks("learn")),
                          infer_ranks=len(plan.ranks("infer")), rank=rank)
    except PlanRefused as err:
        refusal = str(err)
    refuse(world, refusal, "memory")
    comms = build_communicators(world, plan)
    torch_plane = None
    if backend == "torch":
        from dvla_hpc.planes.torch_plane import init_torch_plane
        learners, infers = plan.ranks("learn"), plan.ranks("infer")
        torch_plane = init_torch_plane(world, learners + infers, [plan.learner_root] + infers, learners,
                                       device)
    if rank == plan.learner_root:
        try:
            prepare_run_dir(cfg, run_dir)
        except ConfigError as err:
            print(f"config error: {err}", file=sys.stderr)
            world.Abort(2)
        print(f"dvla_hpc: {plan.describe()}; devices {describe_devices(plan, devices)}; data plane "
              f"{backend}; run directory {run_dir}", file=sys.stderr)
    telemetry = Telemetry(device.index if device is not None and device.type == "cuda" else None)
    ctx = RankContext(cfg, bp, plan, comms, ControlPlane(comms.control),
                      DataPump(comms.data, cfg.pipeline.poll_max_sleep_ms / 1000, pump_first_sleep_s(cfg, plan, rank)),
                      stop_request,
                      device, backend, torch_plane, telemetry, describe_devices(plan, devices),
                      gather_hostnames(world), threading.Event(), threading.Event())
    summary = None
    if role == "sim":
        from dvla_hpc.roles.sim import run_sim
        run_sim(ctx)
    elif role == "infer":
        from dvla_hpc.roles.infer import run_infer
        run_infer(ctx)
    else:
        from dvla_hpc.roles.learner import run_learner
        summary = run_learner(ctx, run_dir)
    ctx.control.close()
    if torch_plane is not None:
        torch_plane.shutdown()
    telemetry.close()
    return summary


def compute_device(name: str, threads: int) -> "torch.device":
    """An infer or learner rank's torch device, made current."""
    import torch
    torch.set_num_threads(threads)
    device = torch.device(name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def describe_devices(plan: RolePlan, devices: dict[int, str]) -> dict[str, str]:
    """Per role, the devices its ranks use: {"learn": "cuda:0, cuda:1", "sim": "cpu", ...}."""
    return {role: ", ".join(sorted({devices[r] for r in plan.ranks(role)})) for role in ("sim", "infer", "learn")}
