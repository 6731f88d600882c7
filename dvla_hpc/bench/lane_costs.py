"""Per-env-step cost of each lane run alone, at the config's batch sizes, and the performance model.

Each probe runs the lane's real code (the vector env, `InferLane.serve`, `GRPOLearner.update`) with
nothing else running, and reports wall seconds and CPU seconds (this process plus its env
workers) per env step. The model of ../shared/DESIGN.md then gives:
    sync  = 1 / (c_sample + c_infer + c_learn)
    async = min(1 / max(c_x / parallelism_x), cores / (cpu_sample + cpu_infer + cpu_learn))
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import psutil
import torch

from dvla_hpc.config.schema import Config
from dvla_hpc.memory.accounting import DATA_PATH
from dvla_hpc.memory.layouts import H, SlabKind, stamp
from dvla_hpc.memory.slab_pool import SlabPool
from dvla_hpc.runtime import assembly
from dvla_hpc.runtime.blueprint import Blueprint, make_vector_env
from dvla_hpc.runtime.devices import local_device


@dataclass
class LaneCost:
    wall_per_step: float  # seconds of wall time per env step
    cpu_per_step: float  # CPU seconds (all cores, env workers included) per env step
    steps: int

    @property
    def cores_used(self) -> float:
        return self.cpu_per_step / self.wall_per_step


class CpuClock:
    """Wall and CPU time of this process and its children (env workers) between start and stop."""

    def __enter__(self) -> "CpuClock":
        self.me = psutil.Process()
        self.workers = self.me.children(recursive=True)
        self.cpu0 = self.cpu_now()
        self.t0 = time.perf_counter()
        return self

    def cpu_now(self) -> float:
        total = sum(self.me.cpu_times()[:2])
        for child in self.workers:
            try:
                total += sum(child.cpu_times()[:2])
            except psutil.NoSuchProcess:  # a worker that has exited has no more CPU to count
                pass
        return total

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.t0
        self.cpu = self.cpu_now() - self.cpu0


def sample_cost(cfg: Config, seconds: float) -> LaneCost:
    """Both halves stepping with random actions, as the sample lane steps them."""
    env = make_vector_env(cfg)
    try:
        n = cfg.env.envs_per_sampler
        rng = np.random.default_rng(0)
        actions = rng.uniform(-1, 1, (n, env.spec.action_dim)).astype(np.float32)
        seeds = np.arange(n, dtype=np.int64)
        ids = np.arange(n, dtype=np.int64)
        env.reset_async(ids, seeds)
        env.wait()
        for _ in range(3):
            env.step_async(ids, actions, seeds)
            env.wait()
        steps = 0
        with CpuClock() as clock:
            while time.perf_counter() - clock.t0 < seconds:
                env.step_async(ids, actions, seeds)
                env.wait()
                steps += n
        return LaneCost(clock.wall / steps, clock.cpu / steps, steps)
    finally:
        env.close()


def infer_cost(cfg: Config, bp: Blueprint, seconds: float, device: torch.device) -> LaneCost:
    """`InferLane.serve` on observation slabs of one half, episodes closing every max_episode_steps."""
    half = cfg.env.envs_per_sampler // 2
    ports = assembly.infer_ports(bp, 1)
    obs_pool, episode_pool = ports.obs_pool, ports.episode_pool
    holder = assembly.weight_holder(bp, device, 0)
    holder.load_initial(torch.nn.utils.parameters_to_vector(bp.initial_policy().parameters()), 0)
    [lane] = assembly.infer_lanes(bp, holder, ports, 0, assembly.Signals.new())
    rng = np.random.default_rng(0)
    step = 0

    def serve_one() -> None:
        nonlocal step
        slot = obs_pool.acquire()
        obs = obs_pool.slots[slot]
        stamp(obs["header"], SlabKind.OBSERVATIONS)
        obs["header"][H.COUNT], obs["header"][H.ROUND] = half, 0
        obs["env_ids"][:] = np.arange(half)
        obs["image"][:] = rng.integers(0, 255, obs["image"].shape, dtype=np.uint8)
        obs["done"][:] = step > 0 and step % bp.spec.max_episode_steps == 0
        step += 1
        lane.serve(slot)
        ports.action_pool.release(ports.action_out.get(0))
        while (ep := ports.episode_out.get(0)) is not None:
            episode_pool.release(ep)

    for _ in range(3):
        serve_one()
    steps = 0
    with CpuClock() as clock:
        while time.perf_counter() - clock.t0 < seconds:
            serve_one()
            steps += half
    return LaneCost(clock.wall / steps, clock.cpu / steps, steps)


def synthetic_groups(bp: Blueprint) -> tuple[SlabPool, list[list[dict]]]:
    """One update's worth of full-length episodes with random images, tokens and rewards."""
    cfg, learn = bp.cfg, bp.cfg.learn
    pool = SlabPool(bp.episode_layout, learn.groups_per_update * learn.group_size)
    rng = np.random.default_rng(0)
    t = bp.spec.max_episode_steps
    for view in pool.slots:
        stamp(view["header"], SlabKind.EPISODE)
        view["header"][H.COUNT] = view["header"][H.ENV_STEPS] = t
        view["image"][:] = rng.integers(0, 255, view["image"].shape, dtype=np.uint8)
        view["tokens"][:] = rng.integers(0, cfg.model.action_bins, view["tokens"].shape)
        view["logp"][:] = -np.log(cfg.model.action_bins)
        view["reward"][:] = rng.uniform(0, 1, t)
    groups = [pool.slots[g * learn.group_size:(g + 1) * learn.group_size]
              for g in range(learn.groups_per_update)]
    return pool, groups


def learn_cost(cfg: Config, bp: Blueprint, seconds: float, device: torch.device,
               ready: Callable[[], None] | None = None) -> LaneCost:
    """`GRPOLearner.update` on full-length synthetic groups: seconds per env step trained.
    `ready` is called once the learner is built and warm, just before the timed updates."""
    pool, groups = synthetic_groups(bp)
    learner = assembly.build_learner(bp, device)
    learner.update(groups)
    if ready is not None:
        ready()
    steps = 0
    with CpuClock() as clock:
        while time.perf_counter() - clock.t0 < seconds:
            for view in pool.slots:
                view["version"][:] = learner.version
            steps += learner.update(groups).samples
    return LaneCost(clock.wall / steps, clock.cpu / steps, steps)


def measure(cfg: Config, seconds: float = 10.0) -> dict[str, LaneCost]:
    torch.set_num_threads(cfg.run.torch_threads)
    bp = Blueprint.from_config(cfg)
    device = local_device(cfg.run.device)
    DATA_PATH.configure(pin=device.type == "cuda")
    return {"sample": sample_cost(cfg, seconds), "infer": infer_cost(cfg, bp, seconds, device),
            "learn": learn_cost(cfg, bp, seconds, device)}


def model_bounds(costs: dict[str, LaneCost], cores: int, parallelism: dict[str, int] | None = None) -> dict:
    parallelism = parallelism or {}
    serial = sum(c.wall_per_step for c in costs.values())
    slowest = max(c.wall_per_step / parallelism.get(name, 1) for name, c in costs.items())
    cpu = sum(c.cpu_per_step for c in costs.values())
    bottleneck = max(costs, key=lambda name: costs[name].wall_per_step / parallelism.get(name, 1))
    return {"sync_steps_per_s": 1 / serial,
            "async_lane_bound": 1 / slowest,
            "async_core_bound": cores / cpu,
            "async_steps_per_s": min(1 / slowest, cores / cpu),
            "async_limited_by": "cores" if cores / cpu < 1 / slowest else f"{bottleneck} lane",
            "costs": {name: {**asdict(c), "cores_used": round(c.cores_used, 2)} for name, c in costs.items()}}
