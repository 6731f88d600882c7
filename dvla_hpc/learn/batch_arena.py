"""The learner's share of the dynamic pool: one update's samples and one minibatch, preallocated.

`load` copies each admitted episode's steps out of its episode slot into the arena, which lives on
the learner's device (a host-to-device copy from pinned slabs on a GPU); `minibatch` gathers
sample rows with `index_select(out=...)`. Neither allocates a data buffer, whatever the update or
minibatch size."""
from __future__ import annotations

import torch

from dvla_hpc.envs.protocol import EnvSpec
from dvla_hpc.memory.accounting import DATA_PATH
from dvla_hpc.memory.layouts import H
from dvla_hpc.model.vla import PolicyBatch


class TrainingArena:
    def __init__(self, spec: EnvSpec, max_episodes: int, minibatch_size: int,
                 instruction_tokens: torch.Tensor, device: torch.device = torch.device("cpu"),
                 action_chunk: int = 1):
        t, a = spec.max_episode_steps, spec.action_dim
        rows, mb = max_episodes * t, minibatch_size
        self.steps_per_episode = t
        self.max_episodes = max_episodes
        self.instruction_tokens = instruction_tokens.to(device)

        def zeros(name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
            return DATA_PATH.zeros(name, shape, dtype, device)

        self.images = zeros("arena/images", (rows, *spec.frames_shape), torch.uint8)
        self.proprio = zeros("arena/proprio", (rows, spec.proprio_dim), torch.float32)
        self.tokens = zeros("arena/tokens", (rows, a), torch.int64)
        self.logp = zeros("arena/logp", (rows, a), torch.float32)
        self.tasks = zeros("arena/tasks", (rows,), torch.int64)
        self.env_steps = zeros("arena/env_steps", (rows,), torch.int32)
        self.mb_images = zeros("arena/mb_images", (mb, *spec.frames_shape), torch.uint8)
        self.mb_proprio = zeros("arena/mb_proprio", (mb, spec.proprio_dim), torch.float32)
        self.mb_tokens = zeros("arena/mb_tokens", (mb, a), torch.int64)
        self.mb_logp = zeros("arena/mb_logp", (mb, a), torch.float32)
        self.mb_tasks = zeros("arena/mb_tasks", (mb,), torch.int64)
        self.mb_words = zeros("arena/mb_words", (mb, instruction_tokens.shape[1]), torch.int64)
        self.mb_env_steps = zeros("arena/mb_env_steps", (mb,), torch.int32)
        self.steps = {"image": self.images, "proprio": self.proprio, "tokens": self.tokens, "logp": self.logp}
        if action_chunk > 1:  # only chunks can run fewer actions than they carry
            self.steps["env_steps"] = self.env_steps
        self.action_chunk = action_chunk
        self.chunk_index = torch.arange(a, device=device) // (a // action_chunk)  # token -> its action
        self.mb_executed = zeros("arena/mb_executed", (mb, a), torch.bool)
        self.episodes = 0

    def clear(self) -> None:
        self.episodes = 0

    def load(self, ep: dict) -> int:
        """Copy an episode slot's steps in; returns the arena row of its step 0."""
        if self.episodes == self.max_episodes:
            raise RuntimeError(f"training arena holds {self.max_episodes} episodes; the update has more")
        t, row = int(ep["header"][H.COUNT]), self.episodes * self.steps_per_episode
        for name in self.steps:
            self.steps[name][row: row + t].copy_(torch.from_numpy(ep[name][:t]), non_blocking=True)
        self.tasks[row: row + t] = int(ep["header"][H.TASK])
        self.episodes += 1
        return row

    def minibatch(self, rows: torch.Tensor
                  ) -> tuple[PolicyBatch, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(inputs, behaviour tokens, behaviour log-probs, which tokens' actions ran) of these
        arena rows; the last is None without action chunks (every action runs)."""
        k = len(rows)
        images = torch.index_select(self.images, 0, rows, out=self.mb_images[:k])
        proprio = torch.index_select(self.proprio, 0, rows, out=self.mb_proprio[:k])
        tokens = torch.index_select(self.tokens, 0, rows, out=self.mb_tokens[:k])
        logp = torch.index_select(self.logp, 0, rows, out=self.mb_logp[:k])
        tasks = torch.index_select(self.tasks, 0, rows, out=self.mb_tasks[:k])
        words = torch.index_select(self.instruction_tokens, 0, tasks, out=self.mb_words[:k])
        executed = None
        if self.action_chunk > 1:
            env_steps = torch.index_select(self.env_steps, 0, rows, out=self.mb_env_steps[:k])
            executed = torch.lt(self.chunk_index, env_steps.unsqueeze(1), out=self.mb_executed[:k])
        return PolicyBatch(images, proprio, words), tokens, logp, executed
