"""The infer lane's episode assembler: each finished episode slot holds exactly its env's steps,
booked from observation slabs whose rows come and go (episodes ending, envs parked)."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from dvla_hpc.envs.registry import env_spec
from dvla_hpc.lanes.infer import EpisodeAssembler
from dvla_hpc.lanes.lane import Lane, SlotQueue
from dvla_hpc.memory.layouts import H, PARKED, SlabKind, episode_layout, observation_layout, stamp
from dvla_hpc.memory.slab_pool import SlabPool

SPEC = env_spec("tabletop_reach", image_size=16)
ENVS = 4


class Reference:
    """What the assembler must produce, kept as plain per-env lists of steps."""

    def __init__(self):
        self.open: dict[tuple[int, int], dict] = {}
        self.finished: list[dict] = []

    def book(self, sampler: int, obs: dict, tokens, logp, actions, version: int) -> None:
        for j in range(int(obs["header"][H.COUNT])):
            key = (sampler, int(obs["env_ids"][j]))
            episode = self.open.get(key)
            if episode is not None:
                episode["reward"][-1] = float(obs["reward"][j])
                episode["env_steps"][-1] = int(obs["env_steps"][j])
                if obs["done"][j]:
                    episode["success"], episode["failed"] = bool(obs["success"][j]), bool(obs["failed"][j])
                    self.finished.append(self.open.pop(key))
        for j in range(int(obs["header"][H.COUNT])):
            key = (sampler, int(obs["env_ids"][j]))
            if key not in self.open:
                if obs["group"][j] == PARKED:
                    continue
                self.open[key] = {"key": key, "group": int(obs["group"][j]), "image": [], "tokens": [],
                                  "logp": [], "action": [], "reward": [], "env_steps": [], "version": []}
            episode = self.open[key]
            episode["image"].append(obs["image"][j].copy())
            episode["tokens"].append(tokens[j].copy())
            episode["logp"].append(logp[j].copy())
            episode["action"].append(actions[j].copy())
            episode["reward"].append(0.0)
            episode["env_steps"].append(0)
            episode["version"].append(version)


class StubLane(Lane):
    def __init__(self):
        super().__init__("infer", threading.Event(), threading.Event())


def slab(rng, pool: SlabPool, sampler: int, env_ids: list[int], done: list[bool], group: list[int]) -> dict:
    obs = pool.slots[0]
    n = len(env_ids)
    stamp(obs["header"], SlabKind.OBSERVATIONS)
    obs["header"][H.SAMPLER], obs["header"][H.COUNT] = sampler, n
    obs["env_ids"][:n] = env_ids
    obs["image"][:n] = rng.integers(0, 255, obs["image"][:n].shape, dtype=np.uint8)
    obs["reward"][:n] = rng.uniform(size=n)
    obs["env_steps"][:n] = rng.integers(1, 4, size=n)
    obs["done"][:n] = done
    obs["success"][:n] = rng.uniform(size=n) < 0.5
    obs["failed"][:n] = rng.uniform(size=n) < 0.2
    obs["group"][:n] = group
    return obs


def test_each_finished_episode_holds_exactly_its_envs_steps_in_order():
    rng = np.random.default_rng(0)
    obs_pool = SlabPool(observation_layout(SPEC, ENVS), 1)
    episodes = SlabPool(episode_layout(SPEC), 16)
    assembler, reference, out, lane = EpisodeAssembler(episodes, SPEC.max_episode_steps), Reference(), \
        SlotQueue(16, "episodes"), StubLane()
    lengths = {(0, 4): 3, (0, 5): 2, (0, 6): 4, (1, 4): 5}  # two samplers share env id 4
    steps = dict.fromkeys(lengths, 0)
    parked_after_first = {(0, 6)}
    finished_slots = []
    for t in range(14):
        for sampler, envs in ((0, [4, 5, 6]), (1, [4])):
            done, group = [], []
            for env in envs:
                key = (sampler, env)
                ended = t > 0 and steps[key] == lengths[key]
                steps[key] = 1 if ended or t == 0 else steps[key] + 1
                done.append(ended)
                parked = key in parked_after_first and (ended or t >= lengths[key])
                group.append(PARKED if parked else 100 * sampler + env)
            obs = slab(rng, obs_pool, sampler, envs, done, group)
            n = len(envs)
            tokens = rng.integers(0, 11, (n, SPEC.action_dim))
            logp, actions = rng.normal(size=(2, n, SPEC.action_dim)).astype(np.float32)
            assembler.close_finished(sampler, obs, out, lane.stop)
            assert assembler.record_step(sampler, obs, tokens, logp, actions, t, lane)
            reference.book(sampler, obs, tokens, logp, actions, t)
            while (slot := out.get(0)) is not None:
                finished_slots.append(slot)
    assert len(finished_slots) == len(reference.finished) >= 8
    for slot, want in zip(finished_slots, reference.finished):
        ep = episodes.slots[slot]
        n = int(ep["header"][H.COUNT])
        assert (int(ep["header"][H.SAMPLER]), int(ep["header"][H.ENV])) == want["key"]
        assert int(ep["header"][H.GROUP]) == want["group"]
        assert n == len(want["image"])
        np.testing.assert_array_equal(ep["image"][:n], np.stack(want["image"]))
        np.testing.assert_array_equal(ep["tokens"][:n], np.stack(want["tokens"]))
        np.testing.assert_array_equal(ep["logp"][:n], np.stack(want["logp"]))
        np.testing.assert_array_equal(ep["action"][:n], np.stack(want["action"]))
        np.testing.assert_allclose(ep["reward"][:n], want["reward"], rtol=1e-6)
        np.testing.assert_array_equal(ep["env_steps"][:n], want["env_steps"])
        np.testing.assert_array_equal(ep["version"][:n], want["version"])
        assert int(ep["header"][H.ENV_STEPS]) == sum(want["env_steps"])
        assert (bool(ep["header"][H.SUCCESS]), bool(ep["header"][H.FAILED])) == (want["success"], want["failed"])
    assert (0, 6) not in assembler.open  # parked after its first episode: never reopened


def test_an_env_running_past_its_step_limit_is_named():
    rng = np.random.default_rng(1)
    obs_pool = SlabPool(observation_layout(SPEC, ENVS), 1)
    episodes = SlabPool(episode_layout(SPEC), 2)
    assembler, out, lane = EpisodeAssembler(episodes, max_steps=3), SlotQueue(2, "episodes"), StubLane()
    tokens, logp, actions = np.zeros((1, 2), np.int64), np.zeros((1, 2), np.float32), np.zeros((1, 2), np.float32)
    for _ in range(3):
        obs = slab(rng, obs_pool, 2, [7], [False], [1])
        assembler.close_finished(2, obs, out, lane.stop)
        assembler.record_step(2, obs, tokens, logp, actions, 0, lane)
    with pytest.raises(RuntimeError, match=r"env \(2, 7\) ran past its step limit 3"):
        assembler.close_finished(2, slab(rng, obs_pool, 2, [7], [False], [1]), out, lane.stop)
