"""Open-loop action chunks (as OpenVLA-OFT executes them): the policy emits k actions per call and
the env worker steps them one after another without asking the policy again, stopping early at
done. To everything upstream a chunk is one action of k * A dimensions and one decision step;
`StepResult.env_steps` says how many simulator steps it took."""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from dvla_hpc.envs.protocol import Env, EnvSpec, Observation, StepResult


def chunked_spec(spec: EnvSpec, k: int) -> EnvSpec:
    return dataclasses.replace(spec, action_dim=spec.action_dim * k,
                               max_episode_steps=math.ceil(spec.max_episode_steps / k))


class ActionChunkEnv:
    def __init__(self, env: Env, k: int):
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"action_chunk must be a positive int, got {k!r}")
        self.env, self.k = env, k
        self.action_dim = env.spec.action_dim
        self.spec = chunked_spec(env.spec, k)

    def reset(self, seed: int, task: int | None = None) -> Observation:
        return self.env.reset(seed, task)

    def step(self, action: np.ndarray) -> StepResult:
        actions = np.asarray(action).reshape(self.k, self.action_dim)
        reward = 0.0
        for executed, single in enumerate(actions, start=1):
            result = self.env.step(single)
            reward += result.reward
            if result.done:
                break
        return dataclasses.replace(result, reward=reward, env_steps=executed)

    def close(self) -> None:
        self.env.close()
