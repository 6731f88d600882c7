"""A small Vision-Language-Action policy in the RT-1 mould: an instruction-conditioned (FiLM)
patch encoder, a transformer over image, instruction and proprio tokens, and per-dimension
discretised action tokens."""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from dvla_hpc.config.schema import ModelConfig
from dvla_hpc.envs.protocol import EnvSpec


@dataclass
class PolicyBatch:
    images: torch.Tensor  # (B, H, W, 3) uint8
    proprio: torch.Tensor  # (B, P) float32
    instruction_tokens: torch.Tensor  # (B, L) int64, 0 = padding


class FiLMPatchEncoder(nn.Module):
    """Instruction-conditioned pixel features (a 1x1 colour/feature mixer, then a patchify conv,
    both FiLM-modulated by the instruction), pooled into patch tokens, plus one keypoint token:
    where each conditioned feature fires, by a spatial softmax at full resolution. The language
    picks what to look for before any attention happens, which makes grounding cheap to learn."""

    def __init__(self, channels: int, patch_size: int, width: int, text_width: int):
        super().__init__()
        self.pixel = nn.Conv2d(3, channels, kernel_size=1)
        self.patchify = nn.Conv2d(channels, channels, kernel_size=patch_size, stride=patch_size)
        self.film = nn.Linear(text_width, 4 * channels)
        self.log_temperature = nn.Parameter(torch.tensor(2.0))
        self.project = nn.Linear(channels, width)
        self.keypoints = nn.Linear(2 * channels, width)

    def forward(self, images: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch tokens (B, patches, width) and one keypoint token (B, 1, width)."""
        x = images.permute(0, 3, 1, 2).float().div_(255.0)
        g1, b1, g2, b2 = self.film(text).unsqueeze(-1).unsqueeze(-1).chunk(4, dim=1)
        x = self.pixel(x) * (1 + g1) + b1
        points = spatial_softmax(x * self.log_temperature.exp())
        x = torch.relu(self.patchify(torch.relu(x)) * (1 + g2) + b2)
        patches = self.project(x.flatten(2).transpose(1, 2))
        return patches, self.keypoints(points).unsqueeze(1)


def spatial_softmax(features: torch.Tensor) -> torch.Tensor:
    """Expected (x, y) in [-1, 1] of each channel's activation: where each feature fires."""
    b, c, h, w = features.shape
    attention = torch.softmax(features.flatten(2), dim=-1).view(b, c, h, w)
    ys = torch.linspace(-1, 1, h, device=features.device)
    xs = torch.linspace(-1, 1, w, device=features.device)
    return torch.cat([(attention.sum(3) * ys).sum(-1), (attention.sum(2) * xs).sum(-1)], dim=1)


class VLAPolicy(nn.Module):
    def __init__(self, cfg: ModelConfig, spec: EnvSpec):
        super().__init__()
        height, width, _ = spec.image_shape
        self.action_dim = spec.action_dim
        self.bins = cfg.action_bins
        num_patches = (height // cfg.patch_size) * (width // cfg.patch_size)
        self.word_embed = nn.Embedding(cfg.vocab_size, cfg.width, padding_idx=0)
        self.word_pos = nn.Parameter(torch.randn(cfg.max_instruction_tokens, cfg.width) * 0.02)
        self.encoder = FiLMPatchEncoder(cfg.encoder_channels, cfg.patch_size, cfg.width, cfg.width)
        self.patch_pos = nn.Parameter(torch.randn(num_patches, cfg.width) * 0.02)
        with warnings.catch_warnings():
            # proprio_dim 0 (pixel-only envs): a weightless Linear, its bias a learned state token
            warnings.filterwarnings("ignore", "Initializing zero-element tensors", UserWarning)
            self.proprio_embed = nn.Linear(spec.proprio_dim, cfg.width)
        self.action_queries = nn.Parameter(torch.randn(spec.action_dim, cfg.width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            cfg.width, cfg.heads, dim_feedforward=cfg.width * 2, dropout=0.0,
            batch_first=True, norm_first=True)
        self.trunk = nn.TransformerEncoder(layer, cfg.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.width)
        self.action_head = nn.Linear(cfg.width, cfg.action_bins)

    def forward(self, batch: PolicyBatch) -> torch.Tensor:
        """Logits of shape (B, action_dim, bins)."""
        words = batch.instruction_tokens
        word_tokens = self.word_embed(words) + self.word_pos[: words.shape[1]]
        present = (words != 0).unsqueeze(-1).float()
        text = (self.word_embed(words) * present).sum(1) / present.sum(1).clamp(min=1)
        image_tokens, keypoint_token = self.encoder(batch.images, text)
        proprio_token = self.proprio_embed(batch.proprio).unsqueeze(1) + keypoint_token
        # The action queries start from the state (proprio + keypoints): a direct path from where
        # things are to the action logits, which the attention over patches then refines.
        queries = self.action_queries + proprio_token
        tokens = torch.cat([queries, proprio_token, word_tokens, image_tokens + self.patch_pos], dim=1)
        padding = torch.zeros(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        padding[:, self.action_dim + 1: self.action_dim + 1 + words.shape[1]] = words == 0
        hidden = self.trunk(tokens, src_key_padding_mask=padding)
        return self.action_head(self.norm(hidden[:, : self.action_dim]))

    @torch.no_grad()
    def act(self, batch: PolicyBatch, generator: torch.Generator | None = None):
        """Sampled action tokens (B, A) and their per-token log-probabilities (B, A)."""
        logits = self.forward(batch)
        probs = torch.softmax(logits.float(), dim=-1)
        tokens = torch.multinomial(probs.view(-1, self.bins), 1, generator=generator).view(probs.shape[:2])
        logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        return tokens, logp
