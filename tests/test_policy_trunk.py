"""The policy's trunk computes its last layer at the action queries only; outputs and gradients
must equal the whole transformer's at those positions."""
from __future__ import annotations

import pytest
import torch

from dvla_hpc.config.schema import ModelConfig
from dvla_hpc.envs.protocol import EnvSpec
from dvla_hpc.model.vla import VLAPolicy


@pytest.mark.parametrize("depth", [1, 3])
def test_the_trimmed_last_layer_equals_the_whole_trunk_at_the_action_queries(depth):
    cfg = ModelConfig(encoder="conv", width=32, heads=4, depth=depth)
    spec = EnvSpec(image_shape=(64, 64, 3), proprio_dim=3, action_dim=3, max_episode_steps=10,
                   instructions=("reach",))
    torch.manual_seed(depth)
    policy = VLAPolicy(cfg, spec)
    tokens = torch.randn(5, 12, cfg.width)
    padding = torch.zeros(5, 12, dtype=torch.bool)
    padding[1, 6:8] = padding[3, 7] = True
    target = torch.randn(5, spec.action_dim, cfg.width)

    def gradients(out: torch.Tensor) -> list[torch.Tensor]:
        policy.zero_grad()
        (out * target).sum().backward()
        return [p.grad.clone() for p in policy.trunk.parameters()]

    trimmed = policy.attend(tokens, padding)
    whole = policy.trunk(tokens, src_key_padding_mask=padding)[:, : spec.action_dim]
    assert trimmed.shape == whole.shape
    assert torch.allclose(trimmed, whole, atol=1e-5)
    for a, b in zip(gradients(trimmed), gradients(whole), strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    padding[1, 6:8] = False  # the mask reaches the last layer's keys: unmasking changes the output
    assert not torch.allclose(policy.attend(tokens, padding)[1], trimmed[1], atol=1e-5)
