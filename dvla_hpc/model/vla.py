"""A small Vision-Language-Action policy in the RT-1 mould: an instruction-conditioned (FiLM)
image encoder (model/encoders.py) shared by the cameras, a transformer over image, instruction and
proprio tokens, and per-dimension discretised action tokens (an action chunk of k actions is k
times the action dimensions: one query token each)."""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from dvla_hpc.config.schema import ModelConfig
from dvla_hpc.envs.protocol import EnvSpec
from dvla_hpc.model.encoders import make_encoder


@dataclass
class PolicyBatch:
    images: torch.Tensor  # (B, cameras, H, W, 3) uint8
    proprio: torch.Tensor  # (B, P) float32
    instruction_tokens: torch.Tensor  # (B, L) int64, 0 = padding


class VLAPolicy(nn.Module):
    def __init__(self, cfg: ModelConfig, spec: EnvSpec):
        super().__init__()
        height, width, _ = spec.image_shape
        self.action_dim = spec.action_dim
        self.bins = cfg.action_bins
        self.word_embed = nn.Embedding(cfg.vocab_size, cfg.width, padding_idx=0)
        self.word_pos = nn.Parameter(torch.randn(cfg.max_instruction_tokens, cfg.width) * 0.02)
        self.encoder = make_encoder(cfg, height)
        self.patch_pos = nn.Parameter(torch.randn(self.encoder.num_patches, cfg.width) * 0.02)
        with warnings.catch_warnings():
            # proprio_dim 0 (pixel-only envs): a weightless Linear, its bias a learned state token
            warnings.filterwarnings("ignore", "Initializing zero-element tensors", UserWarning)
            self.proprio_embed = nn.Linear(spec.proprio_dim, cfg.width)
        self.action_queries = nn.Parameter(torch.randn(spec.action_dim, cfg.width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            cfg.width, cfg.heads, dim_feedforward=cfg.width * cfg.ff_mult, dropout=0.0,
            batch_first=True, norm_first=True)
        # the layers and their state-dict names; `attend` runs them, the last one trimmed
        self.trunk = nn.TransformerEncoder(layer, cfg.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.width)
        self.action_head = nn.Linear(cfg.width, cfg.action_bins)
        if len(spec.cameras) > 1:  # created last: one-camera policies initialise as before
            self.camera_embed = nn.Parameter(torch.randn(len(spec.cameras), 1, cfg.width) * 0.02)

    def forward(self, batch: PolicyBatch) -> torch.Tensor:
        """Logits of shape (B, action_dim, bins)."""
        words = batch.instruction_tokens
        embedded = self.word_embed(words)
        word_tokens = embedded + self.word_pos[: words.shape[1]]
        present = (words != 0).unsqueeze(-1).float()
        text = (embedded * present).sum(1) / present.sum(1).clamp(min=1)
        image_tokens, keypoint_token = self.encode_cameras(batch.images, text)
        proprio_token = self.proprio_embed(batch.proprio).unsqueeze(1) + keypoint_token
        # The action queries start from the state (proprio + keypoints): a direct path from where
        # things are to the action logits, which the attention over patches then refines.
        queries = self.action_queries + proprio_token
        tokens = torch.cat([queries, proprio_token, word_tokens, image_tokens], dim=1)
        padding = torch.zeros(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        padding[:, self.action_dim + 1: self.action_dim + 1 + words.shape[1]] = words == 0
        return self.action_head(self.norm(self.attend(tokens, padding)))

    def attend(self, tokens: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """The trunk's output at the action queries (B, action_dim, width), the only positions
        read. Its last layer computes just those: queries from them, keys and values from every
        token, so the result equals the whole trunk's there, for a fraction of that layer's
        attention and feed-forward (all of the trunk's at depth 1). The last layer's submodules
        are called directly, bypassing its forward (and any hook a wrapper put there)."""
        *inner, last = self.trunk.layers
        for layer in inner:
            tokens = layer(tokens, src_key_padding_mask=padding)
        a = self.action_dim
        normed = last.norm1(tokens)
        attended = last.self_attn(normed[:, :a], normed, normed, key_padding_mask=padding, need_weights=False)[0]
        x = tokens[:, :a] + attended
        return x + last.linear2(last.activation(last.linear1(last.norm2(x))))

    def encode_cameras(self, images: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every camera's patch tokens (B, cameras * patches, width), each with its position (and
        camera) embedding, and the cameras' keypoint tokens summed into one (B, 1, width)."""
        b, c = images.shape[:2]
        patches, keypoints = self.encoder(images.flatten(0, 1), text.repeat_interleave(c, dim=0))
        patches = (patches + self.patch_pos).view(b, c, *patches.shape[1:])
        keypoints = keypoints.view(b, c, -1)
        if c > 1:
            patches = patches + self.camera_embed.unsqueeze(0)
            keypoints = keypoints + self.camera_embed.squeeze(1)
        return patches.flatten(1, 2), keypoints.sum(1, keepdim=True)

    @torch.inference_mode()  # a tenth cheaper a small call than no_grad: no version counters
    def act(self, batch: PolicyBatch, generator: torch.Generator | None = None):
        """Sampled action tokens (B, A) and their per-token log-probabilities (B, A)."""
        logits = self.forward(batch)
        probs = torch.softmax(logits.float(), dim=-1)
        tokens = torch.multinomial(probs.view(-1, self.bins), 1, generator=generator).view(probs.shape[:2])
        logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        return tokens, logp
