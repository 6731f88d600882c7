"""Gradient lane: gathers finished episodes into GRPO groups, updates, publishes new versions."""
from __future__ import annotations

import time
from collections import defaultdict
from typing import Callable

from dvla_hpc.learn.learner import GRPOLearner
from dvla_hpc.lanes.lane import Lane, SlotQueue
from dvla_hpc.memory.layouts import H, SlabKind, validate
from dvla_hpc.memory.slab_pool import SlabPool


class RunProgress:
    """What the learner has seen so far; read by the progress bar and the final summary."""

    def __init__(self):
        self.env_steps = 0
        self.episodes = 0
        self.failed_episodes = 0
        self.successes: list[bool] = []
        self.updates = 0
        self.samples_trained = 0
        self.dropped_stale = 0
        self.lag_sum = 0.0
        self.last_update: dict = {}

    def resume_from(self, counters: dict) -> None:
        """Continue the step budget of a resumed run (success history starts afresh)."""
        self.env_steps = int(counters.get("env_steps", 0))
        self.updates = int(counters.get("updates", 0))

    @property
    def lag_mean(self) -> float:
        return self.lag_sum / self.samples_trained if self.samples_trained else 0.0

    def recent_success(self, window: int = 100) -> float:
        recent = self.successes[-window:]
        return sum(recent) / len(recent) if recent else 0.0


class LearnLane(Lane):
    def __init__(self, learner: GRPOLearner, episode_pool: SlabPool, episode_in: SlotQueue,
                 publish: Callable[[int], None], retire: Callable[[int], None],
                 log_metrics: Callable[[dict], None], group_size: int, groups_per_update: int,
                 publish_every: int, stop, failed, name: str = "learn"):
        super().__init__(name, stop, failed)
        self.learner = learner
        self.pool, self.episode_in = episode_pool, episode_in
        self.publish, self.retire, self.log_metrics = publish, retire, log_metrics
        self.group_size, self.groups_per_update = group_size, groups_per_update
        self.publish_every = publish_every
        self.progress = RunProgress()
        self.forming: dict[int, list[int]] = defaultdict(list)
        self.complete: list[list[int]] = []
        self.started = time.perf_counter()

    def loop(self) -> None:
        self.publish(self.learner.version)
        for slot in self.each(self.episode_in.get):
            self.admit(slot)
            if len(self.complete) >= self.groups_per_update:
                self.train(self.complete[: self.groups_per_update])
                del self.complete[: self.groups_per_update]

    def admit(self, slot: int) -> None:
        ep = self.pool.slots[slot]
        validate(ep["header"], SlabKind.EPISODE, ep["reward"].shape[0], "learn lane")
        p = self.progress
        p.env_steps += int(ep["header"][H.COUNT])
        p.episodes += 1
        if ep["header"][H.FAILED]:
            p.failed_episodes += 1
        else:
            p.successes.append(bool(ep["header"][H.SUCCESS]))
        members = self.forming[int(ep["header"][H.GROUP])]
        members.append(slot)
        if len(members) == self.group_size:
            self.complete.append(members)
            del self.forming[int(ep["header"][H.GROUP])]

    def train(self, groups: list[list[int]]) -> None:
        stats = self.learner.update([[self.pool.slots[s] for s in g] for g in groups])
        for group in groups:
            for slot in group:
                self.retire(slot)
        if stats is None:
            return
        p = self.progress
        p.updates += 1
        p.samples_trained += stats.samples
        p.dropped_stale += stats.dropped_stale
        p.lag_sum += stats.lag_mean * stats.samples
        self.items += 1
        p.last_update = {"version": self.learner.version, **vars(stats)}
        if self.learner.version % self.publish_every == 0:
            self.publish(self.learner.version)
        self.log_metrics({"kind": "update", "t": round(time.perf_counter() - self.started, 3),
                          "env_steps": p.env_steps, "episodes": p.episodes,
                          "success_recent": round(p.recent_success(), 4), **p.last_update})
