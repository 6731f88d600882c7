"""Turns complete GRPO groups of episode slabs into clipped-ratio updates of the policy."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dvla_hpc.config.schema import LearnConfig
from dvla_hpc.learn.grpo import clipped_token_loss, outcome_advantages, process_advantages
from dvla_hpc.memory.layouts import H
from dvla_hpc.memory.static_pool import flatten_parameters
from dvla_hpc.model.vla import PolicyBatch, VLAPolicy


@dataclass
class UpdateStats:
    samples: int
    dropped_stale: int
    lag_mean: float
    loss: float
    entropy: float
    clip_fraction: float
    approx_kl: float


class GRPOLearner:
    def __init__(self, cfg: LearnConfig, model: VLAPolicy, instruction_tokens: torch.Tensor,
                 max_steps: int, seed: int):
        self.cfg = cfg
        self.model = model.train()
        self.flat = flatten_parameters(model)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        self.instruction_tokens = instruction_tokens
        self.version = 0
        self.generator = torch.Generator().manual_seed(seed)
        capacity = cfg.groups_per_update * cfg.group_size * max_steps
        self.capacity = capacity
        self.episode_index = torch.zeros(capacity, dtype=torch.long)
        self.step_index = torch.zeros(capacity, dtype=torch.long)
        self.advantages = torch.zeros(capacity)

    def update(self, groups: list[list[dict]]) -> UpdateStats | None:
        """groups: lists of episode slab views (each a dict of numpy arrays)."""
        episodes, n, dropped, lag_sum = [], 0, 0, 0
        for group in groups:
            valid = [ep for ep in group if not ep["header"][H.FAILED]]
            if len(valid) < 2:
                continue
            for ep, adv in zip(valid, self.group_advantages(valid)):
                t = int(ep["header"][H.COUNT])
                lag = self.version - torch.from_numpy(ep["version"][:t])
                fresh = torch.nonzero(lag <= self.cfg.max_policy_lag).squeeze(-1)
                dropped += t - len(fresh)
                k = len(fresh)
                if k == 0:
                    continue
                self.episode_index[n: n + k] = len(episodes)
                self.step_index[n: n + k] = fresh
                self.advantages[n: n + k] = adv[fresh]
                lag_sum += int(lag[fresh].sum())
                episodes.append(ep)
                n += k
        if n == 0:
            return None
        stats = self.optimize(episodes, n)
        self.version += 1
        return UpdateStats(samples=n, dropped_stale=dropped, lag_mean=lag_sum / n, **stats)

    def group_advantages(self, group: list[dict]) -> list[torch.Tensor]:
        rewards = [torch.from_numpy(ep["reward"][: int(ep["header"][H.COUNT])].copy()) for ep in group]
        if self.cfg.advantage == "process":
            return process_advantages(rewards, self.cfg.gamma)
        per_episode = outcome_advantages([float(r.sum()) for r in rewards])
        return [torch.full_like(r, a) for r, a in zip(rewards, per_episode)]

    def optimize(self, episodes: list[dict], n: int) -> dict:
        images = torch.from_numpy(np.stack([ep["image"] for ep in episodes]))
        proprio = torch.from_numpy(np.stack([ep["proprio"] for ep in episodes]))
        tokens = torch.from_numpy(np.stack([ep["tokens"] for ep in episodes]))
        logp = torch.from_numpy(np.stack([ep["logp"] for ep in episodes]))
        tasks = torch.tensor([int(ep["header"][H.TASK]) for ep in episodes])
        totals = {"loss": 0.0, "entropy": 0.0, "clip_fraction": 0.0, "approx_kl": 0.0}
        steps = 0
        mb = self.cfg.minibatch_size
        for _ in range(self.cfg.epochs):
            order = torch.randperm(n, generator=self.generator)
            for start in range(0, n, mb):
                idx = order[start: start + mb]
                e, s = self.episode_index[idx], self.step_index[idx]
                batch = PolicyBatch(images[e, s], proprio[e, s], self.instruction_tokens[tasks[e]])
                loss, info = clipped_token_loss(
                    self.model(batch), tokens[e, s], logp[e, s], self.advantages[idx],
                    self.cfg.clip_ratio, self.cfg.entropy_coef)
                self.optimizer.zero_grad(set_to_none=False)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
                self.optimizer.step()
                totals["loss"] += loss.item()
                for key in ("entropy", "clip_fraction", "approx_kl"):
                    totals[key] += info[key]
                steps += 1
        return {k: v / steps for k, v in totals.items()}
