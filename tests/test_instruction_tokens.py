"""The instruction catalogue is as wide as its longest instruction, and dropping the all-padding
columns leaves the policy's output unchanged (padding is masked), so the trim only saves work."""
from __future__ import annotations

import torch

from dvla_hpc.config.schema import ModelConfig
from dvla_hpc.envs.protocol import EnvSpec
from dvla_hpc.model.tokens import PAD, tokenize, tokenize_catalogue
from dvla_hpc.model.vla import PolicyBatch, VLAPolicy

INSTRUCTIONS = ("reach the red cube", "go left", "push the blue block to the goal")


def test_the_catalogue_is_as_wide_as_its_longest_instruction():
    catalogue = tokenize_catalogue(INSTRUCTIONS, 256, 8)
    assert catalogue.shape == (3, 7)
    for row, text in zip(catalogue, INSTRUCTIONS):
        full = torch.from_numpy(tokenize(text, 256, 8))
        assert torch.equal(row, full[:7]) and (full[7:] == PAD).all()
    assert tokenize_catalogue(("one two three four five six seven eight nine ten",), 256, 8).shape == (1, 8)
    assert tokenize_catalogue(("", "..."), 256, 8).shape == (2, 1)  # no words at all: one padding column


def test_trimmed_padding_leaves_the_policy_output_unchanged():
    cfg = ModelConfig(encoder="conv", width=32, heads=4, depth=2, max_instruction_tokens=8)
    spec = EnvSpec(image_shape=(64, 64, 3), proprio_dim=3, action_dim=2, max_episode_steps=10,
                   instructions=INSTRUCTIONS)
    torch.manual_seed(0)
    policy = VLAPolicy(cfg, spec).eval()
    trimmed = tokenize_catalogue(INSTRUCTIONS, cfg.vocab_size, cfg.max_instruction_tokens)
    padded = torch.zeros((3, 8), dtype=torch.int64)
    padded[:, :trimmed.shape[1]] = trimmed
    tasks = torch.tensor([0, 1, 2, 1])
    images = torch.randint(0, 255, (4, 1, 64, 64, 3), dtype=torch.uint8)
    proprio = torch.randn(4, 3)
    with torch.no_grad():
        short = policy(PolicyBatch(images, proprio, trimmed[tasks]))
        long = policy(PolicyBatch(images, proprio, padded[tasks]))
    assert torch.allclose(short, long, atol=1e-5)
    padded[1, trimmed.shape[1]] = 7  # a real word in the extra column does change the output
    with torch.no_grad():
        assert not torch.allclose(policy(PolicyBatch(images, proprio, padded[tasks])), long, atol=1e-5)
