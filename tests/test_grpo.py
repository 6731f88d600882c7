import pytest
import torch

from dvla_hpc.learn.grpo import clipped_token_loss, outcome_advantages, process_advantages


def test_outcome_advantages_are_group_normalised():
    adv = torch.tensor(outcome_advantages([1.0, 2.0, 3.0, 6.0]))
    assert adv.mean().abs() < 1e-6
    assert adv.std(unbiased=False) == pytest.approx(1.0, abs=1e-4)
    assert adv.argmax() == 3 and adv.argmin() == 0


def test_equal_returns_give_no_signal():
    assert outcome_advantages([0.5, 0.5, 0.5]) == [0.0, 0.0, 0.0]


def test_process_advantages_sum_future_normalised_rewards():
    rewards = [torch.tensor([1.0, 0.0, 1.0]), torch.tensor([0.0, 0.0])]
    flat = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0])
    norm = (flat - flat.mean()) / flat.std(unbiased=False)
    full = process_advantages(rewards, gamma=1.0)
    assert torch.allclose(full[0], torch.stack([norm[0:3].sum(), norm[1:3].sum(), norm[2]]), atol=1e-5)
    assert torch.allclose(full[1], torch.stack([norm[3:5].sum(), norm[4]]), atol=1e-5)
    myopic = process_advantages(rewards, gamma=0.0)
    assert torch.allclose(myopic[0], norm[0:3], atol=1e-5)


def _loss_grad(advantage: float, old_logp_shift: float = 0.0):
    logits = torch.zeros(1, 1, 4, requires_grad=True)
    tokens = torch.tensor([[2]])
    old_logp = torch.log_softmax(logits.detach(), -1)[..., 2] + old_logp_shift
    loss, stats = clipped_token_loss(logits, tokens, old_logp, torch.tensor([advantage]), 0.2, 0.0)
    loss.backward()
    return logits.grad[0, 0], stats


def test_positive_advantage_raises_the_taken_token():
    grad, _ = _loss_grad(1.0)
    assert grad[2] < 0  # gradient descent on the loss raises logit 2
    assert all(grad[i] > 0 for i in (0, 1, 3))
    grad, _ = _loss_grad(-1.0)
    assert grad[2] > 0


def test_clipping_stops_the_gradient_beyond_the_trust_region():
    # ratio = exp(0 - (-1)) = e > 1.2 with a positive advantage: clipped, so no gradient
    grad, stats = _loss_grad(1.0, old_logp_shift=-1.0)
    assert torch.all(grad == 0)
    assert stats["clip_fraction"] == 1.0
    # the same ratio with a negative advantage is not clipped (the min keeps the pessimistic term)
    grad, _ = _loss_grad(-1.0, old_logp_shift=-1.0)
    assert grad.abs().sum() > 0


def _decoupled_grad(advantage: float, behaviour_shift: float, proximal_shift: float = 0.0, cap: float = 2.0):
    """Gradient of the decoupled loss at logits 0: the current policy is the proximal one shifted by
    `proximal_shift`; the behaviour policy's log-prob is the proximal one shifted by `behaviour_shift`."""
    logits = torch.zeros(1, 1, 4, requires_grad=True)
    tokens = torch.tensor([[2]])
    current = torch.log_softmax(logits.detach(), -1)[..., 2]
    proximal = current + proximal_shift
    loss, stats = clipped_token_loss(logits, tokens, proximal + behaviour_shift, torch.tensor([advantage]),
                                     0.2, 0.0, proximal_logp=proximal, behaviour_ratio_cap=cap)
    loss.backward()
    return logits.grad[0, 0], stats


def test_a_stale_sample_still_teaches_under_the_decoupled_objective():
    # The behaviour policy gave the token e times less probability than the current one: against
    # the behaviour policy the ratio is clipped and the gradient zero (test above); against the
    # proximal policy (= the current one at the update's start) the ratio is 1 and the sample counts.
    grad, stats = _decoupled_grad(1.0, behaviour_shift=-1.0)
    assert grad[2] < 0 and stats["clip_fraction"] == 0.0
    # its weight is pi_proximal / pi_behaviour = e, capped at 2: twice a fresh sample's gradient
    fresh, _ = _decoupled_grad(1.0, behaviour_shift=0.0)
    torch.testing.assert_close(grad, 2.0 * fresh)
    uncapped, _ = _decoupled_grad(1.0, behaviour_shift=-1.0, cap=10.0)
    torch.testing.assert_close(uncapped, torch.e * fresh)


def test_the_decoupled_objective_clips_against_the_proximal_policy():
    # the current policy already moved e times beyond the proximal one: clipped, no gradient
    grad, stats = _decoupled_grad(1.0, behaviour_shift=0.0, proximal_shift=-1.0)
    assert torch.all(grad == 0) and stats["clip_fraction"] == 1.0


def test_with_fresh_samples_the_decoupled_objective_is_ppo():
    logits = torch.randn(5, 3, 7, requires_grad=True)
    tokens = torch.randint(0, 7, (5, 3))
    old = torch.log_softmax(torch.randn(5, 3, 7), -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    advantages = torch.randn(5)
    ppo, _ = clipped_token_loss(logits, tokens, old, advantages, 0.2, 0.01)
    decoupled, _ = clipped_token_loss(logits, tokens, old, advantages, 0.2, 0.01, proximal_logp=old.clone())
    torch.testing.assert_close(ppo, decoupled)
