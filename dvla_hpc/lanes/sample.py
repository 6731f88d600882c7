"""Sampling lane: steps one sampler's envs in two halves, ships observation slots, applies actions.

Async mode runs one endless round: while half A steps, the infer lane works on half B; flow control
(`FlowControl`) parks envs whose next episode would open a group the learner root has not granted,
and a half whose envs are all parked rests until a newer grant arrives. Sync mode
runs rounds of a fixed episode budget with no overlap: ship both halves, wait for both action
slots, step both, and park each env whose episode ends once the budget is spent; when every env
is parked the round is over. The next round's observations carry its number, and the infer lane
holds them until the weights trained on the previous round have arrived.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from dvla_hpc.envs.vector import VectorEnv
from dvla_hpc.lanes.lane import Lane, SlotQueue
from dvla_hpc.memory.layouts import H, PARKED, SlabKind, stamp
from dvla_hpc.memory.slab_pool import SlabPool

GROUP_KEY_STRIDE = 1 << 40


class GroupSchedule:
    """Hands out episode starts: G consecutive resets share a GRPO group key and a seed."""

    def __init__(self, run_seed: int, sampler_id: int, group_size: int):
        self.run_seed = run_seed
        self.sampler_id = sampler_id
        self.group_size = group_size
        self.resets = 0

    @property
    def continues_group(self) -> bool:
        """The next reset joins a group already started."""
        return self.resets % self.group_size != 0

    @property
    def groups_started(self) -> int:
        return -(-self.resets // self.group_size)

    def next(self) -> tuple[int, int]:
        index = self.resets // self.group_size
        self.resets += 1
        return self.sampler_id * GROUP_KEY_STRIDE + index, group_seed(self.run_seed, self.sampler_id, index)


def group_seed(run_seed: int, sampler_id: int, index: int) -> int:
    """The reset seed of a sampler's index-th group: every (run, sampler, group) its own initial
    state. A hash, not arithmetic on the group key: a key times a constant modulo 2**31 drops the
    sampler (its stride is a multiple of 2**31), and every sampler would replay the same states."""
    return int(np.random.SeedSequence([run_seed, sampler_id, index]).generate_state(1)[0] >> 1)


def learner_for_group(group: int, learners: int) -> int:
    """The learner replica that trains a group: a sampler's consecutive groups go round-robin
    over the replicas, starting at a different replica for each sampler, so each replica gets an
    even share and a group never splits."""
    sampler, index = divmod(group, GROUP_KEY_STRIDE)
    return (sampler + index) % learners


class FlowControl:
    """Async mode, a sampler's side of flow control: it may have started as many groups as the
    learner root has granted it (lanes/flow_credit.py). An env whose next episode would open a
    group beyond that is parked until a newer grant arrives; a group once started always
    completes (its later members never wait)."""

    def __init__(self, granted: int = 0):
        self.granted = granted

    def observe(self, granted: int) -> None:
        self.granted = max(self.granted, granted)

    def allows(self, groups: int) -> bool:
        """Whether this sampler may have started `groups` groups."""
        return groups <= self.granted


class EpisodeBudget:
    """Episodes a sampler may start per round: None = unlimited (async: one endless round)."""

    def __init__(self, per_round: int | None):
        if per_round is not None and per_round < 1:
            raise ValueError(f"an episode budget needs at least one episode per round, got {per_round}")
        self.per_round = per_round
        self.left = 0

    @property
    def sync(self) -> bool:
        return self.per_round is not None

    def new_round(self) -> None:
        self.left = self.per_round or 0

    def take(self) -> bool:
        if self.per_round is None:
            return True
        if self.left == 0:
            return False
        self.left -= 1
        return True


class SampleLane(Lane):
    def __init__(self, sampler_id: int, make_env: Callable[[], VectorEnv], num_envs: int,
                 schedule: GroupSchedule, budget: EpisodeBudget, obs_pool: SlabPool, obs_out: SlotQueue,
                 action_pool: SlabPool, action_in: SlotQueue, stop, failed, flow: FlowControl | None = None):
        super().__init__("sample", stop, failed)
        self.sampler_id = sampler_id
        self.make_env = make_env
        self.env: VectorEnv | None = None
        self.schedule, self.budget, self.flow = schedule, budget, flow
        self.parked_halves = 0
        self.obs_pool, self.obs_out = obs_pool, obs_out
        self.action_pool, self.action_in = action_pool, action_in
        n = num_envs // 2
        self.halves = [np.arange(0, n, dtype=np.int64), np.arange(n, 2 * n, dtype=np.int64)]
        self.group = np.zeros(num_envs, dtype=np.int64)
        self.seed = np.zeros(num_envs, dtype=np.int64)
        self.next_group = np.zeros(num_envs, dtype=np.int64)
        self.next_seed = np.zeros(num_envs, dtype=np.int64)
        self.live = np.zeros(num_envs, dtype=bool)  # running an episode of this round
        self.has_next = np.zeros(num_envs, dtype=bool)  # next_group/next_seed hold a budgeted episode
        self.shipped = [np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)]  # rows of the last slab
        self.shipped_count = [0, 0]
        self.round = 0
        self.env_steps = 0
        self.step_counter = 0

    def loop(self) -> None:
        # Built on this thread: an inline env's GL context belongs to the thread that made it.
        self.env = self.make_env()
        if self.budget.sync:
            self.run_sync_rounds()
        else:
            self.run_async()

    def run_async(self) -> None:
        """Each action slab steps its half, which ships again once its envs are done. While a half
        steps, the lane still takes the other half's action slab as soon as it comes (the env
        wait wakes for it), so every worker has its next batch queued behind the one it is on.
        An env that flow control parked rejoins its half when a newer grant allows a new group:
        at the half's next action slab while the rest of it steps, or, once all of the half is
        parked, when the half rests."""
        resting = set(range(2)) - set(self.start_round())
        stepping = sorted(set(range(2)) - resting)  # halves whose envs are stepping
        while not self.stop.is_set():
            if stepping:
                done = self.first_stepped(stepping)
                if done is not None:
                    if not self.ship(stepping.pop(done)):
                        return
                    continue
                slot = self.action_in.get_nowait()
            else:
                with self.waiting():
                    slot = self.action_in.get(0.05)
            if slot is not None:
                half = self.apply(slot)
                self.restart(half)
                if self.live[self.halves[half]].any():
                    stepping.append(half)
                else:
                    resting.add(half)
                    self.parked_halves += 1
            for half in sorted(resting):
                if self.restart(half):
                    resting.discard(half)
                    stepping.append(half)

    def first_stepped(self, halves: list[int]) -> int | None:
        """Wait until one of the halves' live envs have all finished their step: its position
        in `halves`; None if an action slab came first."""
        with self.waiting():
            return self.env.wait_any([ids[self.live[ids]] for ids in (self.halves[h] for h in halves)],
                                     wake=self.action_in.wake)

    def may_start(self) -> bool:
        """Whether the next episode may begin: within the round's budget (sync mode) and, when it
        opens a new group, within what flow control allows (async mode)."""
        if self.flow is not None and not self.schedule.continues_group \
                and not self.flow.allows(self.schedule.groups_started + 1):
            return False
        return self.budget.take()

    def restart(self, half: int) -> bool:
        """Reset the half's parked envs that flow control now lets start; whether any did."""
        parked = self.halves[half][~self.live[self.halves[half]]]
        for i in parked:
            self.live[i] = self.may_start()
            if self.live[i]:
                self.group[i], self.seed[i] = self.schedule.next()
        starting = parked[self.live[parked]]
        for i in starting:
            self.draw_next(i)
        if len(starting):
            self.env.reset_async(starting, self.seed[starting])
        return len(starting) > 0

    def run_sync_rounds(self) -> None:
        while not self.stop.is_set():
            active = self.start_round()
            while active:
                for half in active:
                    if not self.ship(half):
                        return
                slots = []
                for slot in self.each(self.action_in.get):
                    slots.append(slot)
                    if len(slots) == len(active):
                        break
                if len(slots) < len(active):
                    return
                for slot in slots:
                    self.apply(slot)
                active = [h for h in active if self.live[self.halves[h]].any()]
            self.round += 1

    def start_round(self) -> list[int]:
        """Reset the envs this round's budget covers; the halves that have any."""
        self.budget.new_round()
        for i in range(len(self.live)):
            self.live[i] = self.may_start()
            if self.live[i]:
                self.group[i], self.seed[i] = self.schedule.next()
        for i in np.flatnonzero(self.live):
            self.draw_next(i)
        active = []
        for half, ids in enumerate(self.halves):
            starting = ids[self.live[ids]]
            if len(starting):
                self.env.reset_async(starting, self.seed[starting])
                active.append(half)
        return active

    def draw_next(self, i: int) -> None:
        self.has_next[i] = self.may_start()
        if self.has_next[i]:
            self.next_group[i], self.next_seed[i] = self.schedule.next()

    def counters(self) -> dict[str, float]:
        env = self.env  # kept after close: its counts stay readable
        return {"env_steps": self.env_steps, "worker_restarts": env.worker_restarts if env is not None else 0,
                "parked_halves": self.parked_halves,
                "worker_cpu_ms": round(1e3 * env.worker_cpu_seconds()) if env is not None else 0}

    def close(self) -> None:
        if self.env is not None:
            self.env.close()

    def apply(self, slot: int) -> int:
        """Step the live envs of the half this action slab answers; returns that half."""
        view = self.action_pool.slots[slot]
        half = int(view["header"][H.HALF])
        rows = self.shipped[half][: self.shipped_count[half]]
        stepping = self.live[rows]
        if stepping.all():
            self.env.step_async(rows, view["action"][: len(rows)], self.next_seed[rows])
        else:
            which = np.flatnonzero(stepping)
            if len(which):
                self.env.step_async(rows[which], view["action"][which], self.next_seed[rows[which]])
        self.action_pool.release(slot)
        self.step_counter += 1
        return half

    def ship(self, half: int) -> bool:
        """Wait for the half's live envs and ship their observations (parking envs out of budget)."""
        ids = self.halves[half]
        rows = ids[self.live[ids]]
        n = len(rows)
        with self.waiting():
            self.env.wait(rows)
        slot = self.acquire_slot(self.obs_pool)
        if slot is None:
            return False
        env = self.env
        view = self.obs_pool.slots[slot]
        parked = []
        for j in np.flatnonzero(env.done[rows]):
            i = rows[j]
            if self.has_next[i]:
                self.group[i], self.seed[i] = self.next_group[i], self.next_seed[i]
                self.draw_next(i)
            else:
                self.live[i] = False
                parked.append(j)
        header = view["header"]
        stamp(header, SlabKind.OBSERVATIONS)
        header[H.SAMPLER], header[H.HALF], header[H.COUNT] = self.sampler_id, half, n
        header[H.STEP], header[H.ROUND] = self.step_counter, self.round
        with self.copying():
            view["env_ids"][:n] = rows
            np.take(env.image, rows, axis=0, out=view["image"][:n])
            np.take(env.proprio, rows, axis=0, out=view["proprio"][:n])
            np.take(env.task_index, rows, out=view["task"][:n])
            np.take(env.reward, rows, out=view["reward"][:n])
            np.take(env.done, rows, out=view["done"][:n])
            np.take(env.success, rows, out=view["success"][:n])
            np.take(env.failed, rows, out=view["failed"][:n])
            np.take(env.env_steps, rows, out=view["env_steps"][:n])
            self.env_steps += int(view["env_steps"][:n].sum())
            np.take(self.group, rows, out=view["group"][:n])
            np.take(self.seed, rows, out=view["seed"][:n])
            view["group"][parked] = PARKED
        self.shipped[half][:n] = rows
        self.shipped_count[half] = n
        self.items += 1
        with self.waiting():
            return self.obs_out.put(slot, self.stop)
