"""Observation slab -> policy inputs on the policy's device.

On the CPU the batch is views of the slab (nothing is copied). On a GPU it is preallocated device
buffers, filled from the pinned slab by non-blocking host-to-device copies on a side stream; the
compute stream waits for that stream, so the copy never stalls other work queued on the GPU."""
from __future__ import annotations

import numpy as np
import torch

from dvla_hpc.memory.accounting import DATA_PATH
from dvla_hpc.model.vla import PolicyBatch


class BatchStager:
    def __init__(self, max_envs: int, frames_shape: tuple[int, ...], proprio_dim: int,
                 instruction_tokens: torch.Tensor, device: torch.device):
        self.device = device
        self.instruction_tokens = instruction_tokens.to(device)
        self.on_gpu = device.type == "cuda"
        if self.on_gpu:
            self.stream = torch.cuda.Stream(device)
            self.images = DATA_PATH.zeros("infer/images", (max_envs, *frames_shape), torch.uint8, device)
            self.proprio = DATA_PATH.zeros("infer/proprio", (max_envs, proprio_dim), torch.float32, device)
            self.tasks = DATA_PATH.zeros("infer/tasks", (max_envs,), torch.int64, device)
            self.words = DATA_PATH.zeros("infer/words", (max_envs, instruction_tokens.shape[1]),
                                         torch.int64, device)

    def stage(self, obs: dict[str, np.ndarray], n: int) -> PolicyBatch:
        images = torch.from_numpy(obs["image"][:n])
        proprio = torch.from_numpy(obs["proprio"][:n])
        tasks = torch.from_numpy(obs["task"][:n]).long()
        if not self.on_gpu:
            return PolicyBatch(images, proprio, self.instruction_tokens[tasks])
        with torch.cuda.stream(self.stream):
            self.images[:n].copy_(images, non_blocking=True)
            self.proprio[:n].copy_(proprio, non_blocking=True)
            self.tasks[:n].copy_(tasks, non_blocking=True)
        torch.cuda.current_stream(self.device).wait_stream(self.stream)
        words = torch.index_select(self.instruction_tokens, 0, self.tasks[:n], out=self.words[:n])
        return PolicyBatch(self.images[:n], self.proprio[:n], words)
