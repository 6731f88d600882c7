"""One finished episode as it is stored on disk and read back for analysis."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

UNASSIGNED_EPISODE_ID = -1


@dataclass
class EpisodeRecord:
    images: np.ndarray  # (T, cameras, H, W, 3) uint8
    proprio: np.ndarray  # (T, P) float32
    actions: np.ndarray  # (T, A) float32, each component in [-1, 1]
    rewards: np.ndarray  # (T,) float32
    dones: np.ndarray  # (T,) bool
    policy_versions: np.ndarray  # (T,) int64: the policy version that produced each step's action
    task: str  # env/task name
    instruction: str
    success: bool
    seed: int
    episode_id: int = UNASSIGNED_EPISODE_ID  # unique per writer; the writer assigns it when left unset
    cameras: tuple[str, ...] = ("agentview",)  # names of images[:, i]

    @property
    def num_steps(self) -> int:
        return int(self.images.shape[0])

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
        for name, (array, ndim, dtype) in expected.items():
            if array.ndim != ndim or array.shape[0] != steps or array.dtype != dtype:
                raise ValueError(
                    f"episode {self.episode_id}: {name} must have {ndim} dims, {steps} steps and dtype "
                    f"{np.dtype(dtype).name}, got {array.shape} {array.dtype}"
                )
        if not np.all(np.abs(self.actions) <= 1.0):  # also rejects NaN
            raise ValueError(f"episode {self.episode_id}: actions must lie in [-1, 1] and be finite")
