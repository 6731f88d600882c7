"""Instruction text -> token ids, and continuous actions <-> per-dimension action tokens."""
from __future__ import annotations

import re
import zlib

import numpy as np
import torch

PAD = 0


def tokenize(text: str, vocab_size: int, max_tokens: int) -> np.ndarray:
    """Hashed word tokens (stable across processes, unlike `hash`); 0 is padding."""
    words = re.findall(r"[a-z0-9]+", text.lower())[:max_tokens]
    ids = np.zeros(max_tokens, dtype=np.int64)
    for i, word in enumerate(words):
        ids[i] = 1 + zlib.crc32(word.encode()) % (vocab_size - 1)
    return ids


def tokenize_catalogue(instructions: tuple[str, ...], vocab_size: int, max_tokens: int) -> torch.Tensor:
    """(instructions, width) token ids, width the longest instruction's length (at least 1): the
    policy masks padding, so a column that is padding in every instruction would only cost
    attention and feed-forward work on every sample."""
    ids = np.stack([tokenize(t, vocab_size, max_tokens) for t in instructions])
    width = max(1, int((ids != PAD).sum(1).max()))
    return torch.from_numpy(np.ascontiguousarray(ids[:, :width]))


class ActionBins:
    """OpenVLA-style uniform bins over [-1, 1]; a token is a bin index per action dimension."""

    def __init__(self, bins: int):
        self.bins = bins
        self.centers = torch.linspace(-1.0, 1.0, bins)

    def to_actions(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.centers[tokens]

    def to_tokens(self, actions: torch.Tensor) -> torch.Tensor:
        scaled = (actions.clamp(-1, 1) + 1) * 0.5 * (self.bins - 1)
        return scaled.round().long()
