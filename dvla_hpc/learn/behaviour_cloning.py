"""Behaviour cloning of the VLA policy on demonstrations: cross-entropy on the action-bin tokens.

Each observation is one sample. With action chunks of k, its target is the k actions that followed
it (steps t .. t+k-1), the demo's last action repeated past its end, tokenised per dimension by the
same ActionBins that turn the policy's tokens into actions."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from dvla_hpc.envs.protocol import EnvSpec
from dvla_hpc.model.tokens import ActionBins, tokenize
from dvla_hpc.model.vla import PolicyBatch, VLAPolicy
from dvla_hpc.output.demo_loader import Demo
from dvla_hpc.runtime.devices import autocast


class DemoMismatch(ValueError):
    """Demonstrations that do not fit the config's env spec or model; the message names the demo."""


@dataclass
class CloningSet:
    images: torch.Tensor  # (N, cameras, H, W, 3) uint8
    proprio: torch.Tensor  # (N, P) float32
    instructions: torch.Tensor  # (N, L) int64, 0 = padding
    targets: torch.Tensor  # (N, k * A) int64 action-bin tokens

    def __len__(self) -> int:
        return int(self.targets.shape[0])


def chunk_targets(actions: np.ndarray, observed_at: np.ndarray, k: int) -> np.ndarray:
    """(T, k * A): for each observation the k actions from the step it preceded on."""
    steps = np.minimum(observed_at[:, None] + np.arange(k), len(actions) - 1)
    return actions[steps].reshape(len(observed_at), -1)


def check_demo(demo: Demo, spec: EnvSpec, k: int) -> None:
    """Raise DemoMismatch naming the first thing about `demo` the env spec does not take."""
    step_dim = spec.action_dim // k
    frames = {camera: frames.shape[1:] for camera, frames in demo.images.items() if camera in spec.cameras}
    for camera, shape in frames.items():
        if shape != spec.image_shape:
            raise DemoMismatch(f"{demo.source}: {camera} frames are {shape}, the config's env takes "
                               f"{spec.image_shape} (env.image_size)")
    if demo.proprio.shape[1] != spec.proprio_dim:
        raise DemoMismatch(f"{demo.source}: proprio has {demo.proprio.shape[1]} values, the config's env "
                           f"takes {spec.proprio_dim}; list the proprio keys in order with "
                           "--key-map KEY=proprio")
    if demo.actions.shape[1] != step_dim:
        raise DemoMismatch(f"{demo.source}: actions have {demo.actions.shape[1]} dims, the config's env "
                           f"takes {step_dim} per step")
    if not np.all(np.isfinite(demo.actions)):
        raise DemoMismatch(f"{demo.source}: actions hold NaN or infinity")
    if not demo.instruction:
        raise DemoMismatch(f"{demo.source}: no language instruction (demo attr instruction, or "
                           "data attr problem_info.language_instruction)")


def cloning_set(demos: Sequence[Demo], spec: EnvSpec, k: int, bins: ActionBins, vocab_size: int,
                max_tokens: int) -> CloningSet:
    for demo in demos:
        check_demo(demo, spec, k)
    n = sum(demo.num_observations for demo in demos)
    data = CloningSet(
        images=torch.empty((n, *spec.frames_shape), dtype=torch.uint8),
        proprio=torch.empty((n, spec.proprio_dim), dtype=torch.float32),
        instructions=torch.empty((n, max_tokens), dtype=torch.int64),
        targets=torch.empty((n, spec.action_dim), dtype=torch.int64))
    row = 0
    for demo in demos:
        t = demo.num_observations
        data.images[row: row + t] = torch.from_numpy(demo.frames(spec.cameras))
        data.proprio[row: row + t] = torch.from_numpy(demo.proprio)
        data.instructions[row: row + t] = torch.from_numpy(tokenize(demo.instruction, vocab_size, max_tokens))
        targets = chunk_targets(demo.actions, demo.observed_at, k)
        data.targets[row: row + t] = bins.to_tokens(torch.from_numpy(targets))
        row += t
    return data


def batch_of(data: CloningSet, idx: torch.Tensor, device: torch.device) -> tuple[PolicyBatch, torch.Tensor]:
    return (PolicyBatch(data.images[idx].to(device), data.proprio[idx].to(device),
                        data.instructions[idx].to(device)), data.targets[idx].to(device))


def token_loss(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Mean cross-entropy over every action token, and the share of tokens the argmax gets right."""
    loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
    accuracy = (logits.argmax(-1) == targets).float().mean().item()
    return loss, accuracy


@torch.no_grad()
def evaluate(policy: VLAPolicy, data: CloningSet, batch_size: int, device: torch.device,
             bf16: bool) -> tuple[float, float]:
    policy.eval()
    total_loss, total_accuracy = 0.0, 0.0
    for start in range(0, len(data), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(data)))
        batch, targets = batch_of(data, idx, device)
        with autocast(device, bf16):
            logits = policy(batch)
        loss, accuracy = token_loss(logits, targets)
        total_loss += loss.item() * len(idx)
        total_accuracy += accuracy * len(idx)
    policy.train()
    return total_loss / len(data), total_accuracy / len(data)


def clone(policy: VLAPolicy, optimizer: torch.optim.Optimizer, data: CloningSet, epochs: int,
          batch_size: int, max_grad_norm: float, seed: int, device: torch.device, bf16: bool,
          report: Callable[[dict], None]) -> list[dict]:
    """Train `epochs` shuffled passes; the curve has one point per epoch (epoch 0: before training)."""
    generator = torch.Generator().manual_seed(seed)
    loss, accuracy = evaluate(policy, data, batch_size, device, bf16)
    curve = [{"epoch": 0, "loss": loss, "token_accuracy": accuracy, "seconds": 0.0}]
    report(curve[-1])
    policy.train()
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        order = torch.randperm(len(data), generator=generator)
        total_loss, total_accuracy = 0.0, 0.0
        for start in range(0, len(data), batch_size):
            idx = order[start: start + batch_size]
            batch, targets = batch_of(data, idx, device)
            with autocast(device, bf16):
                logits = policy(batch)
            loss, accuracy = token_loss(logits, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), max_grad_norm)
            optimizer.step()
            total_loss += loss.item() * len(idx)
            total_accuracy += accuracy * len(idx)
        curve.append({"epoch": epoch, "loss": total_loss / len(data),
                      "token_accuracy": total_accuracy / len(data),
                      "seconds": round(time.perf_counter() - started, 3)})
        report(curve[-1])
    return curve
