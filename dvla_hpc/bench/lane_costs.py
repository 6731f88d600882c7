"""Per-env-step cost of each lane run alone, at the config's batch sizes, and the performance model.

Each probe runs the lane's real code (`SampleLane`, `InferLane.serve`, `GRPOLearner.update`) with
nothing else running, and reports wall seconds and CPU seconds (this process plus its env
workers) per env step. The model of ../shared/DESIGN.md then gives:
    sync  = 1 / (c_sample + c_infer + c_learn)
    async = min(1 / max(c_x / parallelism_x), cores / (cpu_sample + cpu_infer + cpu_learn))
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import psutil
import torch

from dvla_hpc.config.schema import Config
from dvla_hpc.lanes.sample import EpisodeBudget, GroupSchedule, SampleLane
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


def sample_cost(cfg: Config, bp: Blueprint, seconds: float) -> LaneCost:
    """`SampleLane`'s async loop, both halves overlapping, answered at once by a stand-in for the
    infer lane that hands back random actions: the envs' cost and the lane's own bookkeeping."""
    n = cfg.env.envs_per_sampler
    ports, sig = assembly.sim_ports(bp), assembly.Signals.new()
    lane = SampleLane(0, lambda: make_vector_env(cfg), n, GroupSchedule(cfg.run.seed, 0, cfg.learn.group_size),
                      EpisodeBudget(None), ports.obs_pool, ports.obs_out, ports.action_pool, ports.action_in,
                      sig.stop, sig.failed)
    rng = np.random.default_rng(0)
    for view in ports.action_pool.slots:
        stamp(view["header"], SlabKind.ACTIONS)
        view["action"][:] = rng.uniform(-1, 1, view["action"].shape)

    def answer() -> None:
        while not sig.stop.is_set():
            obs = ports.obs_out.get(0.05)
            if obs is None:
                continue
            half = ports.obs_pool.slots[obs]["header"][H.HALF]
            ports.obs_pool.release(obs)
            slot = None
            while slot is None and not sig.stop.is_set():
                slot = ports.action_pool.acquire(0.05)
            if slot is None:
                return
            ports.action_pool.slots[slot]["header"][H.HALF] = half
            ports.action_in.put(slot, sig.stop)

    answerer = threading.Thread(target=answer, name="probe-answer", daemon=True)
    lane.start()
    answerer.start()
    try:
        warm_until = time.monotonic() + 120
        while lane.env_steps < 3 * n and not sig.failed.is_set():
            if time.monotonic() > warm_until:
                raise RuntimeError("the sample lane probe stepped no envs within 120 s")
            time.sleep(0.05)
        first = lane.env_steps
        with CpuClock() as clock:
            sig.stop.wait(seconds)
        steps = lane.env_steps - first
    finally:
        sig.stop.set()
        lane.join()
        answerer.join()
    if lane.error is not None:
        raise RuntimeError(f"the sample lane probe failed:\n{lane.error_text}")
    return LaneCost(clock.wall / steps, clock.cpu / steps, steps)


def infer_cost(cfg: Config, bp: Blueprint, seconds: float, device: torch.device, evict_bytes: int = 0) -> LaneCost:
    """`InferLane.serve` on observation slabs of one half, episodes closing every max_episode_steps.
    With `evict_bytes`, a buffer that large is rewritten before each call, outside the timing, so
    that every call starts from the caches that other lanes' work between its calls leaves behind."""
    half = cfg.env.envs_per_sampler // 2
    ports = assembly.infer_ports(bp, 1)
    obs_pool, episode_pool = ports.obs_pool, ports.episode_pool
    holder = assembly.weight_holder(bp, device, 0)
    holder.load_initial(torch.nn.utils.parameters_to_vector(bp.initial_policy().parameters()), 0)
    [lane] = assembly.infer_lanes(bp, holder, ports, 0, assembly.Signals.new())
    rng = np.random.default_rng(0)
    for obs in obs_pool.slots:  # once: drawing the frames would cost the probe a tenth more
        obs["image"][:] = rng.integers(0, 255, obs["image"].shape, dtype=np.uint8)
    step = 0

    def serve_one() -> None:
        nonlocal step
        slot = obs_pool.acquire()
        obs = obs_pool.slots[slot]
        stamp(obs["header"], SlabKind.OBSERVATIONS)
        obs["header"][H.COUNT], obs["header"][H.ROUND] = half, 0
        obs["env_ids"][:] = np.arange(half)
        obs["done"][:] = step > 0 and step % bp.spec.max_episode_steps == 0
        step += 1
        lane.serve(slot)
        ports.action_pool.release(ports.action_out.get(0))
        while (ep := ports.episode_out.get(0)) is not None:
            episode_pool.release(ep)

    for _ in range(3):
        serve_one()
    evict = np.zeros(evict_bytes // 8) if evict_bytes else None
    steps, wall, cpu = 0, 0.0, 0.0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        if evict is not None:
            evict += 1.0
        wall0, cpu0 = time.perf_counter(), time.process_time()
        serve_one()
        wall += time.perf_counter() - wall0
        cpu += time.process_time() - cpu0
        steps += half
    return LaneCost(wall / steps, cpu / steps, steps)


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


def probe_setup(cfg: Config) -> tuple[Blueprint, torch.device]:
    """The blueprint and device the probes build lanes from, with torch's threads and the data
    path set as a run sets them."""
    torch.set_num_threads(cfg.run.torch_threads)
    bp = Blueprint.from_config(cfg)
    device = local_device(cfg.run.device)
    DATA_PATH.configure(pin=device.type == "cuda")
    return bp, device


def measure(cfg: Config, seconds: float = 10.0) -> dict[str, LaneCost]:
    bp, device = probe_setup(cfg)
    return {"sample": sample_cost(cfg, bp, seconds), "infer": infer_cost(cfg, bp, seconds, device),
            "learn": learn_cost(cfg, bp, seconds, device)}


def cold_infer_cost(cfg: Config, seconds: float, evict_mib: int) -> LaneCost:
    """The infer probe with the caches evicted before every call (`infer_cost`'s evict_bytes): a
    diagnostic beside the model, which takes the lanes as they run alone."""
    bp, device = probe_setup(cfg)
    return infer_cost(cfg, bp, seconds, device, evict_bytes=evict_mib << 20)


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
