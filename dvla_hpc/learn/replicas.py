"""The learner ranks as one data-parallel replica group.

Before every update the replicas agree (small non-blocking collectives): whether any of them is
stopping, every replica's sample count (from the total every replica derives the same number of
optimiser steps, so the gradient allreduces pair up, and its share of each step), and the counts
of what each admitted since the last agreement (the root's progress covers the whole group).
Each optimiser step sums the flat gradient buffer, which every replica has already weighted by
its share of the step's samples, with one bucketed allreduce; after each update a checksum of
every replica's weights is compared. A single learner is a group of one: the same calls,
nothing on the wire."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from mpi4py import MPI

from dvla_hpc.memory.accounting import DATA_PATH
from dvla_hpc.planes.backoff import wait_requests

COUNTS = ("env_steps", "episodes", "failed_episodes", "successes", "samples", "dropped_stale", "lag_sum")
CHECK_CHUNK = 1 << 24


class ReplicaDivergence(RuntimeError):
    pass


@dataclass
class Agreement:
    stop: bool
    samples: list[int]  # each replica's sample count this update, by learner-group rank
    totals: dict[str, float]  # COUNTS summed over the replicas
    by_sampler: np.ndarray  # what this update took from each sampler (tallies x samplers), summed


def weights_checksum(flat: torch.Tensor) -> tuple[int, int]:
    """Two int64 sums over the buffer's 32-bit words (plain, and weighted by chunk position),
    computed where the buffer lives, in bounded chunks: any replica whose bits drifted differs."""
    words = flat.view(torch.int32)
    plain, weighted = 0, 0
    for k, start in enumerate(range(0, words.numel(), CHECK_CHUNK)):
        s = int(words[start: start + CHECK_CHUNK].sum(dtype=torch.int64))
        plain += s
        weighted += (k + 1) * s
    return plain % (1 << 62), weighted % (1 << 62)


class LearnerReplicas:
    def __init__(self, comm: MPI.Comm | None = None, torch_group=None, bucket_mib: float = 25.0,
                 check: bool = True):
        self.comm = comm
        self.size = comm.Get_size() if comm is not None else 1
        self.rank = comm.Get_rank() if comm is not None else 0
        self.torch_group = torch_group
        self.bucket_elements = max(1, int(bucket_mib * 2**20) // 4)
        self.check = check and self.size > 1
        self.checks = 0
        self._stopping = np.zeros(1, dtype=np.int64)
        self._stopping_out = np.zeros(1, dtype=np.int64)
        self._samples = np.zeros(1, dtype=np.int64)
        self._samples_out = np.zeros(self.size, dtype=np.int64)
        self._counts = np.zeros(len(COUNTS), dtype=np.float64)
        self._counts_out = np.zeros(len(COUNTS), dtype=np.float64)
        self._by_sampler_out = np.zeros(0, dtype=np.int64)
        self._host_grad: torch.Tensor | None = None

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def agree(self, stopping: bool, samples: int, counts: dict[str, float],
              by_sampler: np.ndarray | None = None) -> Agreement:
        """Whether to stop, each replica's samples, and the counts and per-sampler tallies summed."""
        self._stopping[0], self._samples[0] = int(stopping), samples
        self._counts[:] = [counts[name] for name in COUNTS]
        by_sampler = np.zeros(0, dtype=np.int64) if by_sampler is None else by_sampler
        if self._by_sampler_out.shape != by_sampler.shape:
            self._by_sampler_out = np.zeros_like(by_sampler)
        if self.comm is None:
            self._stopping_out[:], self._samples_out[:], self._counts_out[:] = \
                self._stopping, self._samples, self._counts
            self._by_sampler_out[:] = by_sampler
        else:
            wait_requests(self.comm.Iallreduce(self._stopping, self._stopping_out, op=MPI.MAX),
                          self.comm.Iallgather(self._samples, self._samples_out),
                          self.comm.Iallreduce(self._counts, self._counts_out, op=MPI.SUM),
                          self.comm.Iallreduce(by_sampler, self._by_sampler_out, op=MPI.SUM),
                          what="learner agreement")
        return Agreement(stop=bool(self._stopping_out[0]), samples=self._samples_out.tolist(),
                         totals=dict(zip(COUNTS, self._counts_out.tolist())), by_sampler=self._by_sampler_out)

    def sum_gradients(self, flat_grad: torch.Tensor) -> None:
        """Sum the flat gradient over the replicas in buckets (a replica without samples in this
        step contributes zeros)."""
        if self.size == 1:
            return
        buckets = flat_grad.split(self.bucket_elements)
        if self.torch_group is not None:
            import torch.distributed as dist
            works = [dist.all_reduce(b, op=dist.ReduceOp.SUM, group=self.torch_group, async_op=True)
                     for b in buckets]
            for work in works:
                work.wait()
        else:
            host = self._host_view(flat_grad)
            offsets = np.cumsum([0] + [b.numel() for b in buckets])
            wait_requests(*(self.comm.Iallreduce(MPI.IN_PLACE, host[a:b], op=MPI.SUM)
                            for a, b in zip(offsets[:-1], offsets[1:])), what="gradient allreduce")
            if flat_grad.device.type != "cpu":
                flat_grad.copy_(self._host_grad)

    def _host_view(self, flat_grad: torch.Tensor) -> np.ndarray:
        """The gradient as numpy for mpi4py: the buffer itself on CPU, a reused host copy on a GPU."""
        if flat_grad.device.type == "cpu":
            return flat_grad.numpy()
        if self._host_grad is None:
            self._host_grad = DATA_PATH.zeros("learn/host_gradient", (flat_grad.numel(),), torch.float32)
        self._host_grad.copy_(flat_grad)
        return self._host_grad.numpy()

    def check_identical(self, flat: torch.Tensor, version: int) -> None:
        if not self.check:
            return
        mine = np.array(weights_checksum(flat), dtype=np.int64)
        low, high = np.empty_like(mine), np.empty_like(mine)
        wait_requests(self.comm.Iallreduce(mine, low, op=MPI.MIN),
                      self.comm.Iallreduce(mine, high, op=MPI.MAX), what="replica check")
        self.checks += 1
        if (low != high).any():
            raise ReplicaDivergence(
                f"learner replicas hold different weights after version {version} (this learner, "
                f"rank {self.rank} of the learner group, has checksum {mine.tolist()}; the group "
                f"ranges from {low.tolist()} to {high.tolist()})")
