"""MPI mode: plan roles over the world, build communicators and planes, run this rank's role."""
from __future__ import annotations

import threading
import sys
from pathlib import Path

import torch
from mpi4py import MPI

from dvla_hpc.config.loader import ConfigError
from dvla_hpc.config.schema import Config
from dvla_hpc.planes.control import ControlPlane
from dvla_hpc.planes.data_pump import DataPump
from dvla_hpc.roles.common import RankContext
from dvla_hpc.runtime.blueprint import Blueprint, episode_budget
from dvla_hpc.runtime.run_dir import prepare_run_dir
from dvla_hpc.runtime.signals import StopRequest
from dvla_hpc.runtime.topology import LayoutError, build_communicators, detect_placement, plan_layout


class PlacementRefused(SystemExit):
    pass


def run_mpi(cfg: Config, run_dir: Path, world: MPI.Comm, stop_request: StopRequest) -> dict | None:
    torch.set_num_threads(cfg.run.torch_threads)
    node_of, switch_of = detect_placement(world, cfg.layout.ranks_per_node, cfg.layout.nodes_per_switch)
    try:
        if cfg.layout.learn_ranks != 1:
            raise LayoutError(f"layout.learn_ranks={cfg.layout.learn_ranks}: data-parallel learners are "
                              "not supported yet; use layout.learn_ranks=1")
        plan = plan_layout(world.Get_size(), cfg.layout.learn_ranks, cfg.layout.infer_ranks,
                           node_of, switch_of)
        episode_budget(cfg, len(plan.ranks("sim")))
    except (LayoutError, ConfigError) as err:  # every rank plans alike, so every rank refuses alike
        if world.Get_rank() == 0:
            kind = "layout" if isinstance(err, LayoutError) else "config"
            print(f"{kind} error: {err}", file=sys.stderr)
        raise PlacementRefused(2) from None
    comms = build_communicators(world, plan)
    rank = world.Get_rank()
    role = plan.roles[rank]
    if rank == plan.learner_root:
        try:
            prepare_run_dir(cfg, run_dir)
        except ConfigError as err:
            print(f"config error: {err}", file=sys.stderr)
            world.Abort(2)
        print(f"dvla_hpc: {plan.describe()}; run directory {run_dir}", file=sys.stderr)
    ctx = RankContext(cfg, Blueprint.from_config(cfg), plan, comms, ControlPlane(comms.control),
                      DataPump(comms.data, cfg.pipeline.poll_max_sleep_ms / 1000), stop_request,
                      threading.Event(), threading.Event())
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
    return summary
