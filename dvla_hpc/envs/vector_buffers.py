"""Per-env result arrays for VectorEnv, either plain numpy or laid out in one shared block."""
from __future__ import annotations

import mmap
import os
from dataclasses import dataclass, fields

import numpy as np

from dvla_hpc.envs.protocol import EnvSpec

_ALIGNMENT = 64


@dataclass
class EnvBuffers:
    """Row i belongs to env i. Obs fields hold the latest observation; the rest describe the last step."""

    image: np.ndarray  # (N, cameras, H, W, 3) uint8
    proprio: np.ndarray  # (N, P) float32
    task_index: np.ndarray  # (N,) int32
    reward: np.ndarray  # (N,) float32
    done: np.ndarray  # (N,) bool
    success: np.ndarray  # (N,) bool
    failed: np.ndarray  # (N,) bool: the worker holding this env crashed or hung during the step
    episode_step: np.ndarray  # (N,) int32: steps taken in the episode the obs fields show
    env_steps: np.ndarray  # (N,) int32: simulator steps the last step took (1, or up to k for a chunk)

    @classmethod
    def allocate(cls, spec: EnvSpec, num_envs: int) -> EnvBuffers:
        return cls(**{name: np.zeros(shape, dtype) for name, shape, dtype in _layout(spec, num_envs)})

    @classmethod
    def over(cls, block: mmap.mmap, spec: EnvSpec, num_envs: int) -> EnvBuffers:
        """Views into block, which must hold at least nbytes(spec, num_envs) bytes."""
        arrays, offset = {}, 0
        for name, shape, dtype in _layout(spec, num_envs):
            count = int(np.prod(shape))
            arrays[name] = np.frombuffer(block, dtype=dtype, count=count, offset=offset).reshape(shape)
            offset = _aligned(offset + count * dtype.itemsize)
        return cls(**arrays)

    @staticmethod
    def nbytes(spec: EnvSpec, num_envs: int) -> int:
        offset = 0
        for _, shape, dtype in _layout(spec, num_envs):
            offset = _aligned(offset + int(np.prod(shape)) * dtype.itemsize)
        return offset

    def release(self) -> None:
        """Drop these views; a mapping closes itself once no array views it any more."""
        for field in fields(self):
            setattr(self, field.name, None)


def create_shared_block(size: int) -> tuple[int, str]:
    """An anonymous shared file of `size` bytes (memfd): its fd, which the caller keeps open while
    workers may attach, and the path by which processes it spawns open the same file. No name ever
    appears in /dev/shm, so a run ended by SIGKILL or MPI_Abort leaves nothing behind: the kernel
    frees the memory with the last process that maps it."""
    fd = os.memfd_create("dvla_env_buffers", os.MFD_CLOEXEC)
    os.ftruncate(fd, size)
    return fd, f"/proc/{os.getpid()}/fd/{fd}"


def map_shared_block(path: str, size: int) -> mmap.mmap:
    """Map the shared block at `path` (a `create_shared_block` path).

    Arrays viewing the mapping keep it alive and it unmaps itself after the last one goes, so
    nothing has to be closed explicitly, and a caller still holding a view is never an error.
    """
    fd = os.open(path, os.O_RDWR)
    try:
        return mmap.mmap(fd, size)
    finally:
        os.close(fd)


def _layout(spec: EnvSpec, num_envs: int) -> list[tuple[str, tuple[int, ...], np.dtype]]:
    n = num_envs
    return [
        ("image", (n, *spec.frames_shape), np.dtype(np.uint8)),
        ("proprio", (n, spec.proprio_dim), np.dtype(np.float32)),
        ("task_index", (n,), np.dtype(np.int32)),
        ("reward", (n,), np.dtype(np.float32)),
        ("done", (n,), np.dtype(np.bool_)),
        ("success", (n,), np.dtype(np.bool_)),
        ("failed", (n,), np.dtype(np.bool_)),
        ("episode_step", (n,), np.dtype(np.int32)),
        ("env_steps", (n,), np.dtype(np.int32)),
    ]


def _aligned(offset: int) -> int:
    return -(-offset // _ALIGNMENT) * _ALIGNMENT
