"""Sampling lane: steps one sampler's envs in two halves, ships observation slots, applies actions."""
from __future__ import annotations

from typing import Callable

import numpy as np

from dvla_hpc.envs.vector import VectorEnv

from dvla_hpc.lanes.lane import Lane, SlotQueue
from dvla_hpc.memory.layouts import H, SlabKind, stamp
from dvla_hpc.memory.slab_pool import SlabPool

GROUP_KEY_STRIDE = 1 << 40


class GroupSchedule:
    """Hands out episode starts: G consecutive resets share a GRPO group key and a seed."""

    def __init__(self, run_seed: int, sampler_id: int, group_size: int):
        self.run_seed = run_seed
        self.sampler_id = sampler_id
        self.group_size = group_size
        self.resets = 0

    def next(self) -> tuple[int, int]:
        group = self.sampler_id * GROUP_KEY_STRIDE + self.resets // self.group_size
        self.resets += 1
        seed = (self.run_seed * 1_000_003 + group * 7919) % (1 << 31)
        return group, seed


class SampleLane(Lane):
    def __init__(self, sampler_id: int, make_env: Callable[[], VectorEnv], num_envs: int,
                 schedule: GroupSchedule, obs_pool: SlabPool, obs_out: SlotQueue, action_pool: SlabPool,
                 action_in: SlotQueue, stop, failed):
        super().__init__("sample", stop, failed)
        self.sampler_id = sampler_id
        self.make_env = make_env
        self.env: VectorEnv | None = None
        self.schedule = schedule
        self.obs_pool, self.obs_out = obs_pool, obs_out
        self.action_pool, self.action_in = action_pool, action_in
        self.worker_restarts = 0
        n = num_envs // 2
        self.halves = [np.arange(0, n, dtype=np.int64), np.arange(n, 2 * n, dtype=np.int64)]
        self.slices = [slice(0, n), slice(n, 2 * n)]
        self.group = np.zeros(num_envs, dtype=np.int64)
        self.seed = np.zeros(num_envs, dtype=np.int64)
        self.next_group = np.zeros(num_envs, dtype=np.int64)
        self.next_seed = np.zeros(num_envs, dtype=np.int64)
        self.env_steps = 0
        self.step_counter = 0

    def loop(self) -> None:
        # Built on this thread: an inline env's GL context belongs to the thread that made it.
        self.env = self.make_env()
        for ids in self.halves:
            for i in ids:
                self.group[i], self.seed[i] = self.schedule.next()
                self.next_group[i], self.next_seed[i] = self.schedule.next()
            self.env.reset_async(ids, self.seed[ids])
        for half in (0, 1):
            if not self.ship(half):
                return
        for slot in self.each(self.action_in.get):
            half = self.apply(slot)
            if not self.ship(half):
                return

    def close(self) -> None:
        if self.env is not None:
            self.worker_restarts = self.env.worker_restarts
            self.env.close()

    def apply(self, slot: int) -> int:
        view = self.action_pool.slots[slot]
        half = int(view["header"][H.HALF])
        ids = self.halves[half]
        self.env.step_async(ids, view["action"], self.next_seed[self.slices[half]])
        self.action_pool.release(slot)
        self.env_steps += len(ids)
        self.step_counter += 1
        return half

    def ship(self, half: int) -> bool:
        ids, rows = self.halves[half], self.slices[half]
        with self.waiting():
            self.env.wait(ids)
        slot = self.acquire_slot(self.obs_pool)
        if slot is None:
            return False
        env = self.env
        for i in np.flatnonzero(env.done[rows]) + rows.start:
            self.group[i], self.seed[i] = self.next_group[i], self.next_seed[i]
            self.next_group[i], self.next_seed[i] = self.schedule.next()
        view = self.obs_pool.slots[slot]
        header = view["header"]
        stamp(header, SlabKind.OBSERVATIONS)
        header[H.SAMPLER], header[H.HALF], header[H.COUNT] = self.sampler_id, half, len(ids)
        header[H.STEP] = self.step_counter
        view["env_ids"][:] = ids
        view["image"][:] = env.image[rows]
        view["proprio"][:] = env.proprio[rows]
        view["task"][:] = env.task_index[rows]
        view["reward"][:] = env.reward[rows]
        view["done"][:] = env.done[rows]
        view["success"][:] = env.success[rows]
        view["failed"][:] = env.failed[rows]
        view["group"][:] = self.group[rows]
        view["seed"][:] = self.seed[rows]
        self.items += 1
        with self.waiting():
            return self.obs_out.put(slot, self.stop)
