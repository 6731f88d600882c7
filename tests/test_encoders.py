"""Both image encoders: token shapes, instruction conditioning, and a policy that can learn on them."""
from __future__ import annotations

import pytest
import torch

from dvla_hpc.config.loader import ConfigError, load_config
from dvla_hpc.config.schema import ModelConfig
from dvla_hpc.envs.protocol import EnvSpec
from dvla_hpc.model.conv_stack import conv_output_size, min_conv_image_size
from dvla_hpc.model.encoders import ConvPatchEncoder, make_encoder
from dvla_hpc.model.vla import PolicyBatch, VLAPolicy

SPEC = EnvSpec(image_shape=(64, 64, 3), proprio_dim=3, action_dim=2, max_episode_steps=10,
               instructions=("go left", "go right"))


@pytest.mark.parametrize("encoder, patches", [("conv", 4), ("film_keypoints", 16)])
def test_encoders_give_patch_tokens_and_a_summary_token(encoder, patches):
    enc = make_encoder(ModelConfig(encoder=encoder, patch_size=16, width=32), 64)
    images = torch.randint(0, 255, (5, 64, 64, 3), dtype=torch.uint8)
    tokens, summary = enc(images, torch.randn(5, 32))
    assert enc.num_patches == patches
    assert tokens.shape == (5, patches, 32) and summary.shape == (5, 1, 32)
    other_text, _ = enc(images, torch.randn(5, 32))
    assert not torch.allclose(tokens, other_text)  # the instruction modulates the features


def test_conv_stack_sizes_follow_the_strides():
    assert conv_output_size(64, 8, 4) == 15 and ConvPatchEncoder(8, 8, 84).num_patches == 16  # 84 -> 20 -> 9 -> 4 (4x4)
    smallest = min_conv_image_size()
    assert ConvPatchEncoder(8, 8, smallest).num_patches == 1
    with pytest.raises(ConfigError, match="env.image_size: 32 is too small for model.encoder=conv"):
        load_config(None, ["model.encoder=conv", "env.image_size=32"])


def test_policy_on_the_conv_encoder_learns_to_read_the_image():
    torch.manual_seed(0)
    policy = VLAPolicy(ModelConfig(encoder="conv", width=32, depth=1, action_bins=4), SPEC)
    images = torch.zeros(32, 64, 64, 3, dtype=torch.uint8)
    bright = torch.arange(32) % 2 == 1
    images[bright] = 255
    target = bright.long().unsqueeze(1).repeat(1, 2) * 3  # bin 3 when bright, bin 0 when dark
    batch = PolicyBatch(images[:, None], torch.zeros(32, 3), torch.ones(32, 2, dtype=torch.long))
    optimizer = torch.optim.Adam(policy.parameters(), lr=3e-3)
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(policy(batch).flatten(0, 1), target.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert (policy(batch).argmax(-1) == target).float().mean() == 1.0


def test_a_two_camera_policy_reads_both_cameras_in_their_order():
    spec = EnvSpec(image_shape=(48, 48, 3), proprio_dim=9, action_dim=7, max_episode_steps=10,
                   instructions=("open the drawer",), cameras=("agentview", "wrist"))
    torch.manual_seed(0)
    policy = VLAPolicy(ModelConfig(encoder="conv", width=32), spec)
    images = torch.randint(0, 255, (3, 2, 48, 48, 3), dtype=torch.uint8)
    words = torch.ones(3, 2, dtype=torch.long)
    logits = policy(PolicyBatch(images, torch.zeros(3, 9), words))
    assert logits.shape == (3, 7, policy.bins)
    wrist_changed = images.clone()
    wrist_changed[:, 1] = 255 - wrist_changed[:, 1]
    assert not torch.allclose(logits, policy(PolicyBatch(wrist_changed, torch.zeros(3, 9), words)))
    swapped = images.flip(1)
    assert not torch.allclose(logits, policy(PolicyBatch(swapped, torch.zeros(3, 9), words)))


def convolution_reference(encoder, images: torch.Tensor, text: torch.Tensor):
    """The FiLM encoder written with its convolutions, channels first: what the channels-last
    matmuls must compute."""
    x = images.permute(0, 3, 1, 2).float() / 255.0
    g1, b1, g2, b2 = encoder.film(text).unsqueeze(-1).unsqueeze(-1).chunk(4, dim=1)
    x = encoder.pixel(x) * (1 + g1) + b1
    scaled = x * encoder.log_temperature.exp()
    b, c, h, w = scaled.shape
    attention = torch.softmax(scaled.flatten(2), dim=-1).view(b, c, h, w)
    ys, xs = torch.linspace(-1, 1, h), torch.linspace(-1, 1, w)
    points = torch.cat([(attention.sum(3) * ys).sum(-1), (attention.sum(2) * xs).sum(-1)], dim=1)
    x = torch.relu(encoder.patchify(torch.relu(x)) * (1 + g2) + b2)
    return encoder.project(x.flatten(2).transpose(1, 2)), encoder.keypoints(points).unsqueeze(1)


@pytest.mark.parametrize("image_size", [64, 70])  # 70: the conv drops the pixels past the last patch
def test_film_encoder_matmuls_compute_its_convolutions(image_size):
    torch.manual_seed(0)
    encoder = make_encoder(ModelConfig(patch_size=16, encoder_channels=8, width=32), image_size)
    images = torch.randint(0, 256, (3, image_size, image_size, 3), dtype=torch.uint8)
    text = torch.randn(3, 32)
    patches, keypoints = encoder(images, text)
    want_patches, want_keypoints = convolution_reference(encoder, images, text)
    assert patches.shape == want_patches.shape == (3, (image_size // 16) ** 2, 32)
    torch.testing.assert_close(patches, want_patches, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(keypoints, want_keypoints, rtol=1e-4, atol=1e-5)
    weights = dict(encoder.named_parameters())
    loss = patches.square().sum() + keypoints.square().sum()
    grads = torch.autograd.grad(loss, list(weights.values()))
    want_loss = want_patches.square().sum() + want_keypoints.square().sum()
    want = torch.autograd.grad(want_loss, list(weights.values()))
    for name, got, expected in zip(weights, grads, want):
        assert expected.abs().sum() > 0, name
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5, msg=f"gradient of {name}")


def test_conv_encoder_on_raw_frames_computes_its_convolutions_on_scaled_ones():
    """The 1/255 lives in the first conv's weight: outputs and every gradient equal the stack run
    on frames divided by 255."""
    torch.manual_seed(0)
    encoder = ConvPatchEncoder(32, 16, 64)
    images = torch.randint(0, 256, (4, 64, 64, 3), dtype=torch.uint8)
    text = torch.randn(4, 16)
    patches, summary = encoder(images, text)
    x = encoder.convs(images.permute(0, 3, 1, 2).float() / 255.0)
    gamma, beta = encoder.film(text).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
    want = encoder.project(torch.relu(x * (1 + gamma) + beta).flatten(2).transpose(1, 2))
    torch.testing.assert_close(patches, want, rtol=1e-4, atol=1e-5)
    weights = list(encoder.parameters())
    grads = torch.autograd.grad(patches.square().sum() + summary.sum(), weights)
    want_grads = torch.autograd.grad(want.square().sum() + want.mean(1, keepdim=True).sum(), weights)
    for got, expected in zip(grads, want_grads):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("encoder", ["conv", "film_keypoints"])
def test_encoders_reuse_one_frame_buffer_across_batch_sizes(encoder):
    torch.manual_seed(0)
    enc = make_encoder(ModelConfig(encoder=encoder, patch_size=16, width=32), 64)
    images = torch.randint(0, 256, (6, 64, 64, 3), dtype=torch.uint8)
    text = torch.randn(6, 32)
    with torch.no_grad():
        whole, _ = enc(images, text)
        buffer = enc.frames._buffer.data_ptr()
        part, _ = enc(images[3:], text[3:])  # a smaller batch: the first rows of the same buffer
        assert enc.frames._buffer.data_ptr() == buffer
        torch.testing.assert_close(part, whole[3:], rtol=1e-5, atol=1e-6)
        again, _ = enc(images, text)
        assert enc.frames._buffer.data_ptr() == buffer
        torch.testing.assert_close(again, whole)
        bigger = torch.cat([images, images])  # a larger batch grows it
        grown, _ = enc(bigger, torch.cat([text, text]))
        torch.testing.assert_close(grown[6:], whole, rtol=1e-5, atol=1e-6)


def test_a_forward_that_overwrites_frames_a_pending_backward_needs_makes_it_raise():
    torch.manual_seed(0)
    enc = ConvPatchEncoder(32, 16, 64)
    text = torch.randn(2, 16)
    first, _ = enc(torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8), text)
    enc(torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8), text)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        first.sum().backward()
