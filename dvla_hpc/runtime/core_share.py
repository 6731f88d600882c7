"""Whether a rank's host has a core for every process of the job on it, which sets how eagerly its
data pump polls: a pump on a core of its own answers within 50 us, one on shared cores wakes less,
since each wake (about 20 us of CPU and a context switch) is taken from the lanes beside it."""
from __future__ import annotations

import os

from dvla_hpc.config.schema import Config
from dvla_hpc.planes.backoff import FIRST_SLEEP_S
from dvla_hpc.runtime.topology import RolePlan


def processes_of(plan: RolePlan, rank: int, workers_per_sampler: int) -> int:
    """The rank's process and, on a sim rank, its env workers (0 workers: envs step in the rank)."""
    return 1 + (workers_per_sampler if plan.roles[rank] == "sim" else 0)


def shares_cores(plan: RolePlan, rank: int, workers_per_sampler: int, host_cpus: int, rank_cpus: int) -> bool:
    """True when the job's processes on `rank`'s host outnumber the host's CPUs, or the rank's own
    processes (its workers inherit its affinity) outnumber the CPUs it may run on. Ranks bound to
    CPUs of their own (srun --cpu-bind) thus count only their own; a container held to fewer CPUs
    than the host has by a quota or cpuset is not seen: set pipeline.poll_min_sleep_ms there."""
    on_host = sum(processes_of(plan, r, workers_per_sampler) for r in range(plan.world_size)
                  if plan.node_of[r] == plan.node_of[rank])
    return on_host > host_cpus or processes_of(plan, rank, workers_per_sampler) > rank_cpus


def pump_first_sleep_s(cfg: Config, plan: RolePlan, rank: int) -> float:
    """`pipeline.poll_min_sleep_ms`, or where that is 0 (auto): 50 us on a host with a core for
    every process, else `pipeline.poll_max_sleep_ms`."""
    if cfg.pipeline.poll_min_sleep_ms > 0:
        return cfg.pipeline.poll_min_sleep_ms / 1000
    shared = shares_cores(plan, rank, cfg.env.workers_per_sampler,
                          os.cpu_count() or 1, len(os.sched_getaffinity(0)))
    return cfg.pipeline.poll_max_sleep_ms / 1000 if shared else FIRST_SLEEP_S
