"""The work every framework does per frame of the Reacher benchmark, whatever its design.

Each frame is stepped and rendered once (the raw limit's CPU per frame), goes through Sample
Factory's convnet_simple forward once to act, and forward and backward once to train (one epoch
of PPO). Their sum bounds any framework's frame rate on this machine at cores / CPU per frame, and
a framework's share of that bound is how little it spends on everything else: its own network's
extra layers, copies, queues and the OS. The conv stack is timed alone, one thread, on uint8
frames as both frameworks feed it."""
from __future__ import annotations

import time

import torch

from dvla_hpc.model.encoders import ConvPatchEncoder


def conv_ms_per_sample(image_size: int, act_batch: int, train_batch: int, seconds: float) -> dict:
    """Milliseconds per sample of the conv stack: forward at the acting batch (no grad), forward
    and backward at the training batch."""
    torch.manual_seed(0)
    convs = ConvPatchEncoder(8, 8, image_size).convs
    frames = torch.randint(0, 255, (max(act_batch, train_batch), image_size, image_size, 3), dtype=torch.uint8)

    def forward(batch: int) -> torch.Tensor:
        return convs(frames[:batch].permute(0, 3, 1, 2).float().div_(255.0))

    def act() -> None:
        with torch.no_grad():
            forward(act_batch)

    def train() -> None:
        convs.zero_grad(set_to_none=True)
        forward(train_batch).sum().backward()

    return {"act_ms": _timed(act, seconds) / act_batch * 1e3,
            "train_ms": _timed(train, seconds) / train_batch * 1e3}


def _timed(fn, seconds: float) -> float:
    fn()
    calls, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds or calls < 3:
        fn()
        calls += 1
    return elapsed / calls


def shared_work_bound(env_ms_per_frame: float, act_ms: float, train_ms: float, cores: int) -> dict:
    cpu_ms = env_ms_per_frame + act_ms + train_ms
    return {"env_ms_per_frame": env_ms_per_frame, "act_ms_per_frame": act_ms, "train_ms_per_frame": train_ms,
            "cpu_ms_per_frame": cpu_ms, "cores": cores, "frames_per_second": 1e3 * cores / cpu_ms}


def measure(raw_limit: dict, image_size: int, act_batch: int, train_batch: int, cores: int,
            seconds: float = 3.0) -> dict:
    """The bound from a raw-limit result (each of its processes steps one env flat out on a core,
    so a frame costs 1 / that process's frame rate) and the conv stack timed here."""
    per_process = [p["frames_per_second"] for p in raw_limit["per_process"]]
    env_ms = 1e3 * len(per_process) / sum(per_process)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        conv = conv_ms_per_sample(image_size, act_batch, train_batch, seconds)
    finally:
        torch.set_num_threads(threads)
    return {**shared_work_bound(env_ms, conv["act_ms"], conv["train_ms"], cores),
            "act_batch": act_batch, "train_batch": train_batch}
