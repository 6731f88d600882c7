"""Turns complete GRPO groups of episode slabs into clipped-ratio updates of the policy."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from dvla_hpc.config.schema import LearnConfig
from dvla_hpc.envs.protocol import EnvSpec
from dvla_hpc.learn.batch_arena import TrainingArena
from dvla_hpc.learn.grpo import clipped_token_loss, outcome_advantages, process_advantages
from dvla_hpc.memory.accounting import DATA_PATH
from dvla_hpc.memory.layouts import H
from dvla_hpc.memory.static_pool import flatten_parameters
from dvla_hpc.model.vla import VLAPolicy


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
                 spec: EnvSpec, seed: int):
        self.cfg = cfg
        self.model = model.train()
        self.flat = flatten_parameters(model)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        self.version = 0
        self.generator = torch.Generator().manual_seed(seed)
        episodes = cfg.groups_per_update * cfg.group_size
        self.arena = TrainingArena(spec, episodes, cfg.minibatch_size, instruction_tokens)
        capacity = episodes * spec.max_episode_steps
        self.rows = DATA_PATH.zeros("arena/rows", (capacity,), torch.int64)
        self.advantages = DATA_PATH.zeros("arena/advantages", (capacity,), torch.float32)
        self.mb_rows = DATA_PATH.zeros("arena/mb_rows", (cfg.minibatch_size,), torch.int64)
        self.mb_advantages = DATA_PATH.zeros("arena/mb_advantages", (cfg.minibatch_size,), torch.float32)

    def update(self, groups: list[list[dict]]) -> UpdateStats | None:
        """groups: lists of episode slab views (each a dict of numpy arrays)."""
        n, dropped, lag_sum = 0, 0, 0
        self.arena.clear()
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
                self.rows[n: n + k] = fresh + self.arena.load(ep)
                self.advantages[n: n + k] = adv[fresh]
                lag_sum += int(lag[fresh].sum())
                n += k
        if n == 0:
            return None
        stats = self.optimize(n)
        self.version += 1
        return UpdateStats(samples=n, dropped_stale=dropped, lag_mean=lag_sum / n, **stats)

    def group_advantages(self, group: list[dict]) -> list[torch.Tensor]:
        rewards = [torch.from_numpy(ep["reward"][: int(ep["header"][H.COUNT])]) for ep in group]
        if self.cfg.advantage == "process":
            return process_advantages(rewards, self.cfg.gamma)
        per_episode = outcome_advantages([float(r.sum()) for r in rewards])
        return [torch.full_like(r, a) for r, a in zip(rewards, per_episode)]

    def optimize(self, n: int) -> dict:
        totals = {"loss": 0.0, "entropy": 0.0, "clip_fraction": 0.0, "approx_kl": 0.0}
        steps = 0
        mb = self.cfg.minibatch_size
        for _ in range(self.cfg.epochs):
            order = torch.randperm(n, generator=self.generator)
            for start in range(0, n, mb):
                idx = order[start: start + mb]
                k = len(idx)
                rows = torch.index_select(self.rows, 0, idx, out=self.mb_rows[:k])
                advantages = torch.index_select(self.advantages, 0, idx, out=self.mb_advantages[:k])
                batch, tokens, logp = self.arena.minibatch(rows)
                loss, info = clipped_token_loss(self.model(batch), tokens, logp, advantages,
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
