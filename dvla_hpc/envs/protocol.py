"""The contract every simulator satisfies: reset to a seeded initial state, step an action."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class EnvSpec:
    image_shape: tuple[int, int, int]  # (H, W, 3) uint8, one camera's frame
    proprio_dim: int
    action_dim: int  # continuous actions, each component in [-1, 1]
    max_episode_steps: int
    instructions: tuple[str, ...]  # the task catalogue; observations name a task by index
    name: str = ""
    cameras: tuple[str, ...] = ("agentview",)  # frames come stacked in this order
    initial_states: int = 0  # fixed initial states per task (LIBERO): seed s starts from s % this; 0 = drawn from the seed
    # Named parts of the proprio vector, in order, as (name, width): trajectory files store each
    # part under its name (LIBERO: ee_pos, ee_ori, gripper_states). Empty = one part, "proprio".
    proprio_keys: tuple[tuple[str, int], ...] = ()

    @property
    def frames_shape(self) -> tuple[int, int, int, int]:
        """(cameras, H, W, 3): one observation's images."""
        return (len(self.cameras), *self.image_shape)


@dataclass
class Observation:
    image: np.ndarray  # (cameras, H, W, 3) uint8
    proprio: np.ndarray  # (proprio_dim,) float32
    task_index: int  # index into EnvSpec.instructions


@dataclass
class StepResult:
    observation: Observation
    reward: float
    done: bool  # episode over: success, failure or step limit
    success: bool
    env_steps: int = 1  # simulator steps this action took (an action chunk takes up to k)


class Env(Protocol):
    spec: EnvSpec

    def reset(self, seed: int, task: int | None = None) -> Observation:
        """Same (seed, task), same initial state: GRPO groups and evaluations rely on it.
        task=None lets the seed pick the task."""

    def step(self, action: np.ndarray) -> StepResult: ...

    def close(self) -> None: ...
