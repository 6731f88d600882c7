"""Byte formats for VectorEnv pipes: a struct-packed header, then raw arrays or UTF-8 text. No pickle."""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass

import numpy as np

# Per-env operations inside a batch command.
OP_RESET = 0  # reset with seed
OP_STEP = 1  # step with action; on episode end reset with seed (auto-reset)
OP_FAILED_RESET = 2  # the env's worker died: report a failed, finished step, then reset with seed

# Parent -> worker message kinds.
REQUEST_CONFIG = 1
REQUEST_BATCH = 2
REQUEST_SHUTDOWN = 3
# Worker -> parent message kinds.
REPLY_READY = 1
REPLY_DONE = 2
REPLY_ERROR = 3

_REQUEST = struct.Struct("<BIII")  # kind, seq, count, action_dim
_REPLY = struct.Struct("<BIi")  # kind, seq, env_id (-1: none)


@dataclass(frozen=True)
class WorkerConfig:
    worker_index: int
    env_name: str
    env_kwargs: dict
    env_ids: tuple[int, ...]
    num_envs: int
    nice: int = 0  # added to the worker's niceness before it builds its envs


@dataclass(frozen=True)
class Batch:
    seq: int
    env_ids: np.ndarray  # (n,) int32
    ops: np.ndarray  # (n,) uint8
    seeds: np.ndarray  # (n,) int64, reset seeds for every op
    actions: np.ndarray  # (n, action_dim) float32, ignored for resets


@dataclass(frozen=True)
class Reply:
    kind: int
    seq: int
    env_id: int
    message: str


def pack_config(config: WorkerConfig) -> bytes:
    body = json.dumps({
        "worker_index": config.worker_index, "env_name": config.env_name, "env_kwargs": config.env_kwargs,
        "env_ids": list(config.env_ids), "num_envs": config.num_envs, "nice": config.nice,
    }).encode()
    return _REQUEST.pack(REQUEST_CONFIG, 0, len(body), 0) + body


def unpack_config(message: bytes) -> WorkerConfig:
    kind, _, length, _ = _header(message, REQUEST_CONFIG)
    _expect_length(message, _REQUEST.size + length)
    fields = json.loads(message[_REQUEST.size:].decode())
    fields["env_ids"] = tuple(fields["env_ids"])
    return WorkerConfig(**fields)


def pack_batch(batch: Batch) -> bytes:
    count, action_dim = len(batch.env_ids), batch.actions.shape[1]
    return b"".join((
        _REQUEST.pack(REQUEST_BATCH, batch.seq, count, action_dim),
        np.ascontiguousarray(batch.seeds, np.int64).tobytes(),
        np.ascontiguousarray(batch.actions, np.float32).tobytes(),
        np.ascontiguousarray(batch.env_ids, np.int32).tobytes(),
        np.ascontiguousarray(batch.ops, np.uint8).tobytes(),
    ))


def pack_shutdown() -> bytes:
    return _REQUEST.pack(REQUEST_SHUTDOWN, 0, 0, 0)


def request_kind(message: bytes) -> int:
    if len(message) < _REQUEST.size:
        raise ValueError(f"malformed request: {len(message)} bytes, under the {_REQUEST.size}-byte header")
    return message[0]


def unpack_batch(message: bytes) -> Batch:
    _, seq, count, action_dim = _header(message, REQUEST_BATCH)
    _expect_length(message, _REQUEST.size + count * (8 + 4 * action_dim + 4 + 1))
    offset = _REQUEST.size
    seeds = np.frombuffer(message, np.int64, count, offset)
    offset += 8 * count
    actions = np.frombuffer(message, np.float32, count * action_dim, offset).reshape(count, action_dim)
    offset += 4 * count * action_dim
    env_ids = np.frombuffer(message, np.int32, count, offset)
    ops = np.frombuffer(message, np.uint8, count, offset + 4 * count)
    return Batch(seq=seq, env_ids=env_ids, ops=ops, seeds=seeds, actions=actions)


def pack_reply(kind: int, seq: int, env_id: int = -1, message: str = "") -> bytes:
    return _REPLY.pack(kind, seq, env_id) + message.encode("utf-8", errors="replace")


def unpack_reply(message: bytes) -> Reply:
    if len(message) < _REPLY.size:
        raise ValueError(f"malformed reply: {len(message)} bytes, shorter than its {_REPLY.size}-byte header")
    kind, seq, env_id = _REPLY.unpack_from(message)
    return Reply(kind, seq, env_id, message[_REPLY.size:].decode("utf-8", errors="replace"))


def _header(message: bytes, expected_kind: int) -> tuple[int, int, int, int]:
    if request_kind(message) != expected_kind:
        raise ValueError(f"malformed request: kind {message[0]}, expected {expected_kind}")
    return _REQUEST.unpack_from(message)


def _expect_length(message: bytes, expected: int) -> None:
    if len(message) != expected:
        raise ValueError(f"malformed request: {len(message)} bytes, expected {expected}")
