"""Turns complete GRPO groups of episode slabs into clipped-ratio updates of the policy.

An update has two halves with an agreement between them (learn/replicas.py): `load` copies the
groups' fresh steps into the training arena, the replicas agree on stopping and learn each
other's sample counts, and `optimize` takes minibatch steps over all replicas' samples together,
summing the share-weighted flat gradient buffer across replicas before each optimiser step. One
learner is a replica group of one."""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from dvla_hpc.config.schema import LearnConfig
from dvla_hpc.envs.protocol import EnvSpec
from dvla_hpc.learn.batch_arena import TrainingArena
from dvla_hpc.learn.grpo import clipped_token_loss, outcome_advantages, process_advantages
from dvla_hpc.learn.replicas import Agreement, LearnerReplicas
from dvla_hpc.memory.accounting import DATA_PATH
from dvla_hpc.memory.layouts import H
from dvla_hpc.memory.static_pool import flatten_gradients, flatten_parameters
from dvla_hpc.model.vla import VLAPolicy
from dvla_hpc.runtime.devices import autocast

STAT_KEYS = ("loss", "entropy", "clip_fraction", "approx_kl")


@dataclass
class LoadedUpdate:
    samples: int
    dropped_stale: int
    lag_sum: int


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
                 spec: EnvSpec, seed: int, device: torch.device = torch.device("cpu"),
                 bf16: bool = False, replicas: LearnerReplicas | None = None, action_chunk: int = 1):
        self.cfg = cfg
        self.device, self.bf16 = device, bf16
        self.model = model.to(device).train()
        self.flat = flatten_parameters(self.model)
        self.flat_grad = flatten_gradients(self.model, self.flat)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.replicas = replicas or LearnerReplicas()
        self.version = 0
        self.generator = torch.Generator().manual_seed(seed)
        episodes = cfg.groups_per_update * cfg.group_size // self.replicas.size
        mb = self.minibatch_size = cfg.minibatch_size  # a replica may hold a whole step's samples
        self.arena = TrainingArena(spec, episodes, mb, instruction_tokens, device, action_chunk)
        capacity = episodes * spec.max_episode_steps
        self.rows = DATA_PATH.zeros("arena/rows", (capacity,), torch.int64, device)
        self.advantages = DATA_PATH.zeros("arena/advantages", (capacity,), torch.float32, device)
        self.mb_rows = DATA_PATH.zeros("arena/mb_rows", (mb,), torch.int64, device)
        self.mb_advantages = DATA_PATH.zeros("arena/mb_advantages", (mb,), torch.float32, device)
        self.copying = nullcontext  # the learn lane's, to count arena copies in its breakdown
        self.proximal = None
        if cfg.clip_against == "proximal":
            a = spec.action_dim
            self.proximal = DATA_PATH.zeros("arena/proximal_logp", (capacity, a), torch.float32, device)
            self.mb_proximal = DATA_PATH.zeros("arena/mb_proximal_logp", (mb, a), torch.float32, device)

    def update(self, groups: list[list[dict]]) -> UpdateStats | None:
        """Load, agree and optimise in one call (a learner that reports no counts of its own)."""
        loaded = self.load(groups)
        counts = {"env_steps": 0, "episodes": 0, "failed_episodes": 0, "successes": 0,
                  "samples": loaded.samples, "dropped_stale": loaded.dropped_stale, "lag_sum": loaded.lag_sum}
        return self.optimize(loaded, self.replicas.agree(False, loaded.samples, counts))

    def load(self, groups: list[list[dict]]) -> LoadedUpdate:
        """groups: lists of episode slab views (each a dict of numpy arrays). Copies the steps that
        are fresh enough (lag <= max_policy_lag) into the arena, with their advantages; the slabs
        are free to reuse when it returns."""
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
                with self.copying():
                    self.rows[n: n + k] = fresh + self.arena.load(ep)
                self.advantages[n: n + k] = adv[fresh]
                lag_sum += int(lag[fresh].sum())
                n += k
        if self.device.type == "cuda":  # the slabs may be reused once load returns
            torch.cuda.current_stream(self.device).synchronize()
        if self.proximal is not None:
            self.proximal_logp(n)
        return LoadedUpdate(n, dropped, lag_sum)

    @torch.no_grad()
    def proximal_logp(self, n: int) -> None:
        """The current (pre-update) policy's log-probs of the loaded samples' tokens."""
        for start in range(0, n, self.minibatch_size):
            k = min(self.minibatch_size, n - start)
            batch, tokens, _, _ = self.arena.minibatch(self.rows[start: start + k])
            with autocast(self.device, self.bf16):
                logits = self.model(batch)
            logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
            self.proximal[start: start + k].copy_(logp)

    def group_advantages(self, group: list[dict]) -> list[torch.Tensor]:
        rewards = [torch.from_numpy(ep["reward"][: int(ep["header"][H.COUNT])]) for ep in group]
        if self.cfg.advantage == "process":
            return process_advantages(rewards, self.cfg.gamma)
        per_episode = outcome_advantages([float(r.sum()) for r in rewards])
        return [torch.full_like(r, a) for r, a in zip(rewards, per_episode)]

    def pass_over(self) -> None:
        """Nothing to train (every episode of the update failed or was too stale): a new version
        with the weights unchanged, since flow control counts versions to let samplers go on."""
        self.version += 1

    def optimize(self, loaded: LoadedUpdate, agreed: Agreement) -> UpdateStats | None:
        """`epochs` passes over the samples of all replicas together in minibatches of about
        `learn.minibatch_size`: every replica takes the same number of steps, each step's share
        of its own samples in proportion to its count, and weights its loss by its share of the
        step, so that the summed gradient is the mean over the step's samples of every replica,
        as one learner holding them all would compute it."""
        total = sum(agreed.samples)
        if total == 0:
            return None
        n = loaded.samples
        steps_per_epoch = -(-total // self.minibatch_size)
        totals = dict.fromkeys(STAT_KEYS, 0.0)
        steps = 0
        for _ in range(self.cfg.epochs):
            order = torch.randperm(n, generator=self.generator).to(self.device)
            for j in range(steps_per_epoch):
                start, stop = share_of_step(n, j, steps_per_epoch)
                step_samples = sum(len(range(*share_of_step(c, j, steps_per_epoch))) for c in agreed.samples)
                self.flat_grad.zero_()
                if stop > start:
                    info = self.backward(order[start:stop], (stop - start) / step_samples)
                    for key in STAT_KEYS:
                        totals[key] += info[key]
                    steps += 1
                self.replicas.sum_gradients(self.flat_grad)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
                self.optimizer.step()
        self.version += 1
        self.replicas.check_identical(self.flat, self.version)
        return UpdateStats(samples=n, dropped_stale=loaded.dropped_stale,
                           lag_mean=loaded.lag_sum / n if n else 0.0,
                           **{k: v / max(steps, 1) for k, v in totals.items()})

    def backward(self, idx: torch.Tensor, share: float = 1.0) -> dict:
        """Gradient of `share` times the mean loss over these samples, into the flat buffer."""
        k = len(idx)
        with self.copying():
            rows = torch.index_select(self.rows, 0, idx, out=self.mb_rows[:k])
            advantages = torch.index_select(self.advantages, 0, idx, out=self.mb_advantages[:k])
            batch, tokens, logp, executed = self.arena.minibatch(rows)
            proximal = None
            if self.proximal is not None:
                proximal = torch.index_select(self.proximal, 0, idx, out=self.mb_proximal[:k])
        with autocast(self.device, self.bf16):
            logits = self.model(batch)
        loss, info = clipped_token_loss(logits, tokens, logp, advantages, self.cfg.clip_ratio,
                                        self.cfg.entropy_coef, executed, proximal,
                                        self.cfg.behaviour_ratio_cap)
        (loss * share).backward()
        return {"loss": loss.item(), **info}


def share_of_step(samples: int, step: int, steps: int) -> tuple[int, int]:
    """[start, stop) of a replica's shuffled samples that step `step` of `steps` takes: each
    sample once per epoch, in near-equal runs."""
    return samples * step // steps, samples * (step + 1) // steps
