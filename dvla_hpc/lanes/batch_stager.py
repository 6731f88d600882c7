"""Observation slabs -> one batch of policy inputs on the policy's device.

On the CPU one slab's batch is views of the slab (nothing is copied); several slabs are copied
into preallocated buffers, one after another. On a GPU the batch is always preallocated device
buffers, filled from the pinned slabs by non-blocking host-to-device copies on a side stream; the
compute stream waits for that stream, so the copy never stalls other work queued on the GPU."""
from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch

from dvla_hpc.memory.accounting import DATA_PATH
from dvla_hpc.model.vla import PolicyBatch


class BatchStager:
    def __init__(self, max_envs: int, frames_shape: tuple[int, ...], proprio_dim: int,
                 instruction_tokens: torch.Tensor, device: torch.device):
        self.device = device
        self.max_envs = max_envs
        self.instruction_tokens = instruction_tokens.to(device)
        self.on_gpu = device.type == "cuda"
        self.stream = torch.cuda.Stream(device) if self.on_gpu else None

        def buffer(name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
            return DATA_PATH.zeros(f"slabs/policy_batch/{name}", (max_envs, *shape), dtype, device)

        self.images = buffer("images", frames_shape, torch.uint8)
        self.proprio = buffer("proprio", (proprio_dim,), torch.float32)
        self.tasks = buffer("tasks", (), torch.int64)
        self.words = buffer("words", (instruction_tokens.shape[1],), torch.int64)

    def stage(self, slabs: list[dict[str, np.ndarray]], counts: list[int]) -> PolicyBatch:
        """The first counts[i] rows of each slab, in order, as one batch."""
        total = sum(counts)
        if total > self.max_envs:
            raise ValueError(f"{total} envs in one policy call; the stager holds {self.max_envs}")
        if len(slabs) == 1 and not self.on_gpu:
            obs, n = slabs[0], counts[0]
            tasks = torch.from_numpy(obs["task"][:n]).long()
            return PolicyBatch(torch.from_numpy(obs["image"][:n]), torch.from_numpy(obs["proprio"][:n]),
                               self.instruction_tokens[tasks])
        with torch.cuda.stream(self.stream) if self.on_gpu else nullcontext():
            start = 0
            for obs, n in zip(slabs, counts):
                rows = slice(start, start + n)
                self.images[rows].copy_(torch.from_numpy(obs["image"][:n]), non_blocking=True)
                self.proprio[rows].copy_(torch.from_numpy(obs["proprio"][:n]), non_blocking=True)
                self.tasks[rows].copy_(torch.from_numpy(obs["task"][:n]), non_blocking=True)
                start += n
        if self.on_gpu:
            torch.cuda.current_stream(self.device).wait_stream(self.stream)
        words = torch.index_select(self.instruction_tokens, 0, self.tasks[:total], out=self.words[:total])
        return PolicyBatch(self.images[:total], self.proprio[:total], words)

