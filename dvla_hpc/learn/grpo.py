"""GRPO: group-relative advantages and the clipped ratio objective on action tokens."""
from __future__ import annotations

import torch

EPS = 1e-6


def outcome_advantages(returns: list[float]) -> list[float]:
    """(return - group mean) / (group std + eps); one value per episode of the group."""
    r = torch.tensor(returns, dtype=torch.float64)
    if len(returns) < 2:
        return [0.0] * len(returns)
    adv = (r - r.mean()) / (r.std(unbiased=False) + EPS)
    return adv.tolist()


def process_advantages(step_rewards: list[torch.Tensor], gamma: float = 1.0) -> list[torch.Tensor]:
    """Process-supervised GRPO: normalise every step reward by the group's step-reward statistics;
    a step's advantage is the (gamma-discounted) sum of normalised rewards from that step on."""
    flat = torch.cat(step_rewards).double()
    mean, std = flat.mean(), flat.std(unbiased=False)
    out = []
    for rewards in step_rewards:
        norm = (rewards.double() - mean) / (std + EPS)
        to_go = torch.zeros_like(norm)
        running = 0.0
        for t in range(len(norm) - 1, -1, -1):
            running = norm[t] + gamma * running
            to_go[t] = running
        out.append(to_go.float())
    return out


def clipped_token_loss(logits: torch.Tensor, tokens: torch.Tensor, old_logp: torch.Tensor,
                       advantages: torch.Tensor, clip_ratio: float, entropy_coef: float,
                       executed: torch.Tensor | None = None):
    """logits (B, A, bins); tokens, old_logp (B, A); advantages (B,). Returns (loss, stats).
    `executed` (B, A) bool, for action chunks cut short by the episode's end: only the tokens of
    actions the env ran count."""
    logp_all = torch.log_softmax(logits.float(), dim=-1)
    logp = logp_all.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    ratio = torch.exp(logp - old_logp)
    adv = advantages.unsqueeze(-1)
    surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - clip_ratio, 1 + clip_ratio) * adv)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    if executed is None:
        mean = torch.mean
    else:
        weight = executed.float() / executed.sum().clamp(min=1)
        mean = lambda x: (x * weight).sum()  # noqa: E731
    loss = -mean(surrogate) - entropy_coef * mean(entropy)
    with torch.no_grad():
        clipped = mean(((ratio - 1).abs() > clip_ratio).float())
        approx_kl = mean(old_logp - logp)
    return loss, {"entropy": mean(entropy).item(), "clip_fraction": clipped.item(),
                  "approx_kl": approx_kl.item()}
