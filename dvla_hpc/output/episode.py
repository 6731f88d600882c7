"""One finished episode as it is stored on disk and read back for analysis.

A row is one decision of the policy: an observation and the action it chose. With action chunks
(`action_chunk` = k > 1) an action row holds k actions of A dims each, run open-loop, and
`env_steps` says how many of them the simulator executed (fewer than k when the episode ended
mid-chunk)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

UNASSIGNED_EPISODE_ID = -1


@dataclass
class EpisodeRecord:
    images: np.ndarray  # (T, cameras, H, W, 3) uint8
    proprio: np.ndarray  # (T, P) float32
    actions: np.ndarray  # (T, k * A) float32, each component in [-1, 1]
    rewards: np.ndarray  # (T,) float32
    dones: np.ndarray  # (T,) bool
    policy_versions: np.ndarray  # (T,) int64: the policy version that produced each step's action
    task: str  # env/task name
    instruction: str
    success: bool
    seed: int
    episode_id: int = UNASSIGNED_EPISODE_ID  # unique per writer; the writer assigns it when left unset
    cameras: tuple[str, ...] = ("agentview",)  # names of images[:, i]
    # (T, k * A) float32: each action token's log-probability under the behaviour policy (a row's
    # sum is the action's log-probability); None where the actions came from no policy
    action_logp: np.ndarray | None = None
    env_steps: np.ndarray | None = None  # (T,) int32, 1..k; None = one simulator step per row
    action_chunk: int = 1
    proprio_keys: tuple[tuple[str, int], ...] = ()  # named parts of proprio (EnvSpec.proprio_keys)

    @property
    def num_steps(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_env_steps(self) -> int:
        return self.num_steps if self.env_steps is None else int(self.env_steps.sum())

    def validate(self) -> None:
        """Raise ValueError describing the first field whose shape, dtype or range is wrong."""
        if (self.images.dtype != np.uint8 or self.images.ndim != 5 or self.images.shape[-1] != 3
                or self.images.shape[1] != len(self.cameras)):
            raise ValueError(
                f"episode {self.episode_id}: images must be (T, {len(self.cameras)} cameras, H, W, 3) uint8, "
                f"got {self.images.shape} {self.images.dtype}"
            )
        steps = self.num_steps
        if steps < 1:
            raise ValueError(f"episode {self.episode_id}: an episode needs at least one step")
        expected = {
            "proprio": (self.proprio, 2, np.float32),
            "actions": (self.actions, 2, np.float32),
            "rewards": (self.rewards, 1, np.float32),
            "dones": (self.dones, 1, np.bool_),
            "policy_versions": (self.policy_versions, 1, np.int64),
        }
        if self.action_logp is not None:
            expected["action_logp"] = (self.action_logp, 2, np.float32)
        if self.env_steps is not None:
            expected["env_steps"] = (self.env_steps, 1, np.int32)
        for name, (array, ndim, dtype) in expected.items():
            if array.ndim != ndim or array.shape[0] != steps or array.dtype != dtype:
                raise ValueError(
                    f"episode {self.episode_id}: {name} must have {ndim} dims, {steps} steps and dtype "
                    f"{np.dtype(dtype).name}, got {array.shape} {array.dtype}"
                )
        if not np.all(np.abs(self.actions) <= 1.0):  # also rejects NaN
            raise ValueError(f"episode {self.episode_id}: actions must lie in [-1, 1] and be finite")
        if self.action_chunk < 1 or self.actions.shape[1] % self.action_chunk:
            raise ValueError(f"episode {self.episode_id}: action_chunk {self.action_chunk} does not divide "
                             f"the action width {self.actions.shape[1]}")
        if self.action_logp is not None and self.action_logp.shape != self.actions.shape:
            raise ValueError(f"episode {self.episode_id}: action_logp must have the actions' shape "
                             f"{self.actions.shape}, got {self.action_logp.shape}")
        executed = self.env_steps
        if executed is not None and not np.all((executed >= 1) & (executed <= self.action_chunk)):
            raise ValueError(f"episode {self.episode_id}: env_steps must lie in 1..{self.action_chunk}")
        widths = sum(width for _, width in self.proprio_keys)
        if self.proprio_keys and widths != self.proprio.shape[1]:
            raise ValueError(f"episode {self.episode_id}: proprio_keys cover {widths} values, "
                             f"proprio has {self.proprio.shape[1]}")
