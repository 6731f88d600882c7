"""One evaluated episode kept step by step, for `--record`: what the policy saw and did."""
from __future__ import annotations

import numpy as np

from dvla_hpc.envs.protocol import EnvSpec, Observation
from dvla_hpc.output.episode import EpisodeRecord


class EpisodeTape:
    def __init__(self) -> None:
        self.images: list[np.ndarray] = []
        self.proprio: list[np.ndarray] = []
        self.actions: list[np.ndarray] = []
        self.rewards: list[float] = []
        self.env_steps: list[int] = []

    def add(self, seen: Observation, action: np.ndarray) -> None:
        """Before the step: an env may write the next observation into the same buffers."""
        self.images.append(np.array(seen.image, dtype=np.uint8))
        self.proprio.append(np.array(seen.proprio, dtype=np.float32))
        self.actions.append(np.array(action, dtype=np.float32))

    def outcome(self, reward: float, env_steps: int) -> None:
        self.rewards.append(reward)
        self.env_steps.append(env_steps)

    def to_record(self, spec: EnvSpec, env_name: str, task: int, seed: int, success: bool,
                  policy_version: int, action_chunk: int) -> EpisodeRecord:
        steps = len(self.rewards)
        dones = np.zeros(steps, dtype=np.bool_)
        dones[-1] = True
        return EpisodeRecord(
            images=np.stack(self.images), proprio=np.stack(self.proprio).reshape(steps, -1),
            actions=np.stack(self.actions), rewards=np.asarray(self.rewards, dtype=np.float32),
            dones=dones, policy_versions=np.full(steps, policy_version, dtype=np.int64),
            task=env_name, instruction=spec.instructions[task], success=success, seed=seed,
            cameras=spec.cameras, env_steps=np.asarray(self.env_steps, dtype=np.int32),
            action_chunk=action_chunk, proprio_keys=spec.proprio_keys)
