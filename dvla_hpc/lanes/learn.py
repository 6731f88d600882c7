"""Gradient lane: gathers finished episodes into GRPO groups, updates, publishes new versions."""
from __future__ import annotations

import time
from collections import defaultdict
from typing import TYPE_CHECKING, Callable

import numpy as np

from dvla_hpc.config.schema import LearnConfig
from dvla_hpc.lanes.lane import Lane, SlotQueue
from dvla_hpc.memory.layouts import H
from dvla_hpc.memory.slab_pool import SlabPool

if TYPE_CHECKING:
    from dvla_hpc.learn.learner import GRPOLearner

ADMISSIONS = ("env_steps", "episodes", "failed_episodes", "successes")
TALLIES = ("groups", "env_steps")  # counted per sampler over the groups trained


class RunProgress:
    """What the learner has seen so far; read by the progress bar and the final summary."""

    def __init__(self):
        self.env_steps = 0
        self.episodes = 0
        self.failed_episodes = 0
        self.successes: list[bool] = []
        self.updates = 0
        self.empty_updates = 0  # updates whose every episode failed or was stale: nothing trained
        self.samples_trained = 0
        self.dropped_stale = 0
        self.lag_sum = 0.0
        self.last_update: dict = {}

    def add_others(self, admitted: dict) -> None:
        """Episodes the other learner replicas admitted (their outcomes arrive as counts)."""
        self.env_steps += int(admitted["env_steps"])
        self.episodes += int(admitted["episodes"])
        self.failed_episodes += int(admitted["failed_episodes"])
        succeeded = int(admitted["successes"])
        finished = int(admitted["episodes"] - admitted["failed_episodes"])
        self.successes.extend([True] * succeeded + [False] * (finished - succeeded))

    def resume_from(self, counters: dict) -> None:
        """Continue the step budget of a resumed run (success history starts afresh)."""
        self.env_steps = int(counters.get("env_steps", 0))
        self.episodes = int(counters.get("episodes", 0))
        self.updates = int(counters.get("updates", 0))

    @property
    def lag_mean(self) -> float:
        return self.lag_sum / self.samples_trained if self.samples_trained else 0.0

    def recent_success(self, window: int = 100) -> float:
        recent = self.successes[-window:]
        return sum(recent) / len(recent) if recent else 0.0


class CheckpointSchedule:
    """When the root checkpoints: every `every_updates` updates, and once `every_s` seconds passed
    since the last checkpoint (either 0 = off)."""

    def __init__(self, every_updates: int, every_s: float, clock: Callable[[], float] = time.monotonic):
        self.every_updates, self.every_s, self.clock = every_updates, every_s, clock
        self.last = clock()

    def due(self, updates: int) -> bool:
        now = self.clock()
        if ((self.every_updates and updates % self.every_updates == 0)
                or (self.every_s and now - self.last >= self.every_s)):
            self.last = now
            return True
        return False


class LearnLane(Lane):
    """One learner replica's gradient lane. Each replica trains on its own share of the groups
    (`groups_per_update` / replicas), agreeing with the others before every update; the root's
    progress counts the whole replica group. `publish` and `checkpoint` are the root's (None on
    the other replicas)."""

    # an update in progress always completes (a big model's can outlast any fixed timeout): the
    # final checkpoint must not race it, nor the interpreter exit under a running torch kernel
    finish_timeout_s = None

    def __init__(self, learner: GRPOLearner, episode_pool: SlabPool, episode_in: SlotQueue,
                 publish: Callable[[int, np.ndarray], None] | None, retire: Callable[[int], None],
                 log_metrics: Callable[[dict], None], cfg: LearnConfig, stop, failed,
                 sampler_ids: list[int], checkpoint: Callable[[], None] | None = None,
                 checkpoint_schedule: CheckpointSchedule | None = None):
        super().__init__("learn", stop, failed)
        self.learner = learner
        learner.copying = self.copying
        self.replicas = learner.replicas
        self.pool, self.episode_in = episode_pool, episode_in
        self.publish, self.retire, self.log_metrics = publish, retire, log_metrics
        self.checkpoint, self.checkpoint_schedule = checkpoint, checkpoint_schedule
        self.group_size, self.publish_every = cfg.group_size, cfg.publish_every
        self.groups_per_update = cfg.groups_per_update // self.replicas.size
        self.progress = RunProgress()
        self.sampler_index = {sampler: i for i, sampler in enumerate(sampler_ids)}
        self.taken = np.zeros((len(TALLIES), len(sampler_ids)), dtype=np.int64)  # by this replica, this update
        self.trained = np.zeros((len(TALLIES), len(sampler_ids)), dtype=np.int64)  # by every replica, so far
        self.admitted = dict.fromkeys(ADMISSIONS, 0)  # since the last agreement
        self.forming: dict[int, list[int]] = defaultdict(list)
        self.complete: list[list[int]] = []
        self.left_group = False
        self.started = time.perf_counter()
        self.checkpoints_written = 0
        self.checkpoint_s = 0.0

    @property
    def groups_trained(self) -> np.ndarray:
        return self.trained[TALLIES.index("groups")]

    def trained_by_sampler(self) -> dict[str, dict[str, int]]:
        """Each tally's totals so far, keyed by sampler id: {"groups": {"1": 25, ...}, ...}."""
        return {tally: {str(sampler): int(self.trained[row, i]) for sampler, i in self.sampler_index.items()}
                for row, tally in enumerate(TALLIES)}

    def counters(self) -> dict[str, float]:
        return {"checkpoints": self.checkpoints_written, "checkpoint_ms": round(self.checkpoint_s * 1000)}

    def loop(self) -> None:
        if self.publish is not None:
            self.publish(self.learner.version, self.groups_trained)
        for slot in self.each(self.episode_in.get):
            self.admit(slot)
            if len(self.complete) >= self.groups_per_update:
                groups = self.complete[: self.groups_per_update]
                del self.complete[: self.groups_per_update]
                if not self.train(groups):
                    return
        if self.replicas.size > 1 and not self.left_group:
            self.taken[:] = 0
            self.replicas.agree(True, 0, {**self.admitted, "samples": 0, "dropped_stale": 0, "lag_sum": 0},
                                self.taken)

    def admit(self, slot: int) -> None:
        ep = self.pool.slots[slot]
        p = self.progress
        header = ep["header"]
        steps, failed, success = int(header[H.ENV_STEPS]), bool(header[H.FAILED]), bool(header[H.SUCCESS])
        p.env_steps += steps
        p.episodes += 1
        if failed:
            p.failed_episodes += 1
        else:
            p.successes.append(success)
        for name, value in zip(ADMISSIONS, (steps, 1, int(failed), int(success and not failed))):
            self.admitted[name] += value
        members = self.forming[int(ep["header"][H.GROUP])]
        members.append(slot)
        if len(members) == self.group_size:
            self.complete.append(members)
            del self.forming[int(ep["header"][H.GROUP])]

    def publish_if_due(self) -> None:
        if self.publish is not None and self.learner.version % self.publish_every == 0:
            self.publish(self.learner.version, self.groups_trained)

    def train(self, groups: list[list[int]]) -> bool:
        """One update; False once the replicas agreed to stop. The groups' slots are retired as
        soon as their steps are in the training arena, so the pool refills while the update trains."""
        loaded = self.learner.load([[self.pool.slots[s] for s in g] for g in groups])
        self.taken[:] = 0
        for group in groups:
            sampler = self.sampler_index[int(self.pool.slots[group[0]]["header"][H.SAMPLER])]
            self.taken[:, sampler] += (1, sum(int(self.pool.slots[s]["header"][H.ENV_STEPS]) for s in group))
            for slot in group:
                self.retire(slot)
        agreed = self.replicas.agree(self.stop.is_set(), loaded.samples,
                                     {**self.admitted, "samples": loaded.samples,
                                      "dropped_stale": loaded.dropped_stale, "lag_sum": loaded.lag_sum},
                                     self.taken)
        self.progress.add_others({k: agreed.totals[k] - self.admitted[k] for k in ADMISSIONS})
        self.admitted = dict.fromkeys(ADMISSIONS, 0)
        if agreed.stop:
            self.left_group = True
            return False
        self.trained += agreed.by_sampler
        stats = self.learner.optimize(loaded, agreed)
        p = self.progress
        if stats is None:
            self.learner.pass_over()
            p.empty_updates += 1
            self.publish_if_due()
            return True
        p.updates += 1
        p.samples_trained += int(agreed.totals["samples"])
        p.dropped_stale += int(agreed.totals["dropped_stale"])
        p.lag_sum += agreed.totals["lag_sum"]
        self.items += 1
        p.last_update = {"version": self.learner.version, **vars(stats)}
        self.publish_if_due()
        if self.checkpoint is not None and self.checkpoint_schedule.due(p.updates):
            self.write_checkpoint()
        self.log_metrics({"kind": "update", "t": round(time.perf_counter() - self.started, 3),
                          "env_steps": p.env_steps, "episodes": p.episodes,
                          "success_recent": round(p.recent_success(), 4), **p.last_update})
        return True

    def write_checkpoint(self) -> None:
        t0 = time.perf_counter()
        self.checkpoint()
        self.checkpoint_s += time.perf_counter() - t0
        self.checkpoints_written += 1
