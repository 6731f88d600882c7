"""The contract every simulator satisfies: reset to a seeded initial state, step an action."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class EnvSpec:
    image_shape: tuple[int, int, int]  # (H, W, 3) uint8
    proprio_dim: int
    action_dim: int  # continuous actions, each component in [-1, 1]
    max_episode_steps: int
    instructions: tuple[str, ...]  # the task catalogue; observations name a task by index
    name: str = ""


@dataclass
class Observation:
    image: np.ndarray  # (H, W, 3) uint8
    proprio: np.ndarray  # (proprio_dim,) float32
    task_index: int  # index into EnvSpec.instructions


@dataclass
class StepResult:
    observation: Observation
    reward: float
    done: bool  # episode over: success, failure or step limit
    success: bool


class Env(Protocol):
    spec: EnvSpec

    def reset(self, seed: int) -> Observation:
        """Same seed, same initial state and task: GRPO groups rely on it."""

    def step(self, action: np.ndarray) -> StepResult: ...

    def close(self) -> None: ...
