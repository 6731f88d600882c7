"""Instruction-conditioned image encoders: each turns (B, H, W, 3) uint8 images and a text vector
into patch tokens (B, num_patches, width) and one summary token (B, 1, width).

- `film_keypoints` (default): pixel-level FiLM features, a patchify conv, and a keypoint token from
  a full-resolution spatial softmax. Grounds instructions fast; costly per pixel.
- `conv`: a strided conv stack (8x8/4, 4x4/2, 3x3/2, as in Sample Factory's convnet_simple and the
  Atari Nature CNN), FiLM on its last feature map, every output position a token, the mean
  as summary. Cheap per sample: the comparable network for pixel-control peer benchmarks.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dvla_hpc.config.schema import ModelConfig
from dvla_hpc.model.conv_stack import CONV_STACK, conv_output_size
from dvla_hpc.model.frames import FloatFrames


class FiLMPatchEncoder(nn.Module):
    """Instruction-conditioned pixel features (a 1x1 colour/feature mixer, then a patchify conv,
    both FiLM-modulated by the instruction), pooled into patch tokens, plus one keypoint token:
    where each conditioned feature fires, by a spatial softmax at full resolution. The language
    picks what to look for before any attention happens, which makes grounding cheap to learn."""

    def __init__(self, channels: int, patch_size: int, width: int, text_width: int, image_size: int):
        super().__init__()
        self.num_patches = (image_size // patch_size) ** 2
        self.pixel = nn.Conv2d(3, channels, kernel_size=1)
        self.patchify = nn.Conv2d(channels, channels, kernel_size=patch_size, stride=patch_size)
        self.film = nn.Linear(text_width, 4 * channels)
        self.log_temperature = nn.Parameter(torch.tensor(2.0))
        self.patch_size = patch_size
        self.project = nn.Linear(channels, width)
        self.keypoints = nn.Linear(2 * channels, width)
        self.frames = FloatFrames()

    def forward(self, images: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch tokens (B, patches, width) and one keypoint token (B, 1, width).

        Computed channels-last as matmuls, the conv modules holding the weights: the first FiLM is
        folded into per-sample weights of the 1x1 colour mixer (one batched matmul over the
        pixels; a second, with the softmax temperature folded in too, feeds the keypoints), and
        the patchify conv is a matmul over whole patches. The same function as the convolutions,
        at a fraction of their forward and backward cost on a CPU."""
        b, h, w, _ = images.shape
        pixels = self.frames(images).view(b, h * w, 3)  # 0-255: the 1/255 is in the weight
        g1, b1, g2, b2 = self.film(text).chunk(4, dim=-1)
        scale = 1 + g1
        weight = self.pixel.weight.flatten(1).t() * (scale / 255.0).unsqueeze(1)  # (B, 3, channels)
        bias = (self.pixel.bias * scale + b1).unsqueeze(1)  # (B, 1, channels)
        temperature = self.log_temperature.exp()
        scaled = torch.baddbmm(bias * temperature, pixels, weight * temperature)
        points = spatial_softmax(scaled.view(b, h, w, -1))
        x = torch.relu(torch.baddbmm(bias, pixels, weight)).view(b, h, w, -1)
        patch_weight = self.patchify.weight.permute(0, 2, 3, 1).flatten(1)  # in patches_of's order
        patches = torch.matmul(patches_of(x, self.patch_size), patch_weight.t()) + self.patchify.bias
        x = torch.relu(patches * (1 + g2.unsqueeze(1)) + b2.unsqueeze(1))
        return self.project(x), self.keypoints(points).unsqueeze(1)


def patches_of(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, H, W, C) -> (B, patches, p * p * C): each p x p patch flattened in (row, column,
    channel) order, so that a patch row's pixels stay one contiguous run; patches in row-major order."""
    b, h, w, c = x.shape
    hp, wp = h // p, w // p  # a stride-p conv drops the pixels past the last whole patch
    x = x[:, : hp * p, : wp * p].reshape(b, hp, p, wp, p * c).permute(0, 1, 3, 2, 4)
    return x.reshape(b, hp * wp, p * p * c)


def spatial_softmax(features: torch.Tensor) -> torch.Tensor:
    """Expected (y, x) in [-1, 1] of each channel's activation, (B, H, W, C) -> (B, 2C): where
    each feature fires."""
    b, h, w, c = features.shape
    attention = torch.softmax(features.reshape(b, h * w, c), dim=1).view(b, h, w, c)
    ys = torch.linspace(-1, 1, h, device=features.device).unsqueeze(-1)
    xs = torch.linspace(-1, 1, w, device=features.device).unsqueeze(-1)
    return torch.cat([(attention.sum(2) * ys).sum(1), (attention.sum(1) * xs).sum(1)], dim=1)


class ConvPatchEncoder(nn.Module):
    def __init__(self, width: int, text_width: int, image_size: int):
        super().__init__()
        layers, channels, size = [], 3, image_size
        for out, kernel, stride in CONV_STACK:
            layers += [nn.Conv2d(channels, out, kernel, stride), nn.ReLU()]
            channels, size = out, conv_output_size(size, kernel, stride)
        self.convs = nn.Sequential(*layers[:-1])
        self.frames = FloatFrames()
        self.film = nn.Linear(text_width, 2 * channels)
        self.project = nn.Linear(channels, width)
        self.num_patches = size * size

    def forward(self, images: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first = self.convs[0]  # on 0-255 frames, its weight scaled by 1/255 instead
        x = F.conv2d(self.frames(images).permute(0, 3, 1, 2), first.weight / 255.0, first.bias, first.stride)
        x = self.convs[1:](x)
        gamma, beta = self.film(text).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
        patches = self.project(torch.relu(x * (1 + gamma) + beta).flatten(2).transpose(1, 2))
        return patches, patches.mean(1, keepdim=True)


def make_encoder(cfg: ModelConfig, image_size: int) -> nn.Module:
    if cfg.encoder == "conv":
        return ConvPatchEncoder(cfg.width, cfg.width, image_size)
    return FiLMPatchEncoder(cfg.encoder_channels, cfg.patch_size, cfg.width, cfg.width, image_size)
