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
        norm = ((rewards.double() - mean) / (std + EPS)).tolist()  # Python floats: no tensor op per step
        to_go, running = [0.0] * len(norm), 0.0
        for t in range(len(norm) - 1, -1, -1):
            running = norm[t] + gamma * running
            to_go[t] = running
        out.append(torch.tensor(to_go, dtype=torch.float32))
    return out


def clipped_token_loss(logits: torch.Tensor, tokens: torch.Tensor, old_logp: torch.Tensor,
                       advantages: torch.Tensor, clip_ratio: float, entropy_coef: float,
                       executed: torch.Tensor | None = None, proximal_logp: torch.Tensor | None = None,
                       behaviour_ratio_cap: float = 2.0):
    """logits (B, A, bins); tokens, old_logp (B, A): the behaviour policy's; advantages (B,).
    Returns (loss, stats). `executed` (B, A) bool, for action chunks cut short by the episode's
    end: only the tokens of actions the env ran count.

    With `proximal_logp` (B, A), the log-probs of the policy as the update began, the objective is
    decoupled PPO (Hilton et al., 2022): the ratio is clipped against that proximal policy, so a
    sample some versions old still moves the policy by up to the clip range, and each token is
    weighted by pi_proximal / pi_behaviour, capped at `behaviour_ratio_cap`, to correct for who
    acted. Without it, the ratio is clipped against the behaviour policy (standard PPO)."""
    logp_all = torch.log_softmax(logits.float(), dim=-1)
    logp = logp_all.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    anchor = old_logp if proximal_logp is None else proximal_logp
    ratio = torch.exp(logp - anchor)
    adv = advantages.unsqueeze(-1)
    surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - clip_ratio, 1 + clip_ratio) * adv)
    if proximal_logp is not None:
        surrogate = surrogate * torch.exp(proximal_logp - old_logp).clamp(max=behaviour_ratio_cap)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    if executed is None:
        mean = torch.mean
    else:
        weight = executed.float() / executed.sum().clamp(min=1)
        mean = lambda x: (x * weight).sum()  # noqa: E731
    loss = -mean(surrogate) - entropy_coef * mean(entropy)
    with torch.no_grad():
        clipped = mean(((ratio - 1).abs() > clip_ratio).float())
        approx_kl = mean(anchor - logp)
    return loss, {"entropy": mean(entropy).item(), "clip_fraction": clipped.item(),
                  "approx_kl": approx_kl.item()}
