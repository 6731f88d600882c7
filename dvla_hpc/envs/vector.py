"""N envs stepped in spawned worker processes; results land in shared memory, commands go over pipes.

Env i lives on worker i % num_workers (num_workers=0: all inline, stepped inside step_async). Each
worker runs its batches in order and acknowledges each, so disjoint groups of envs can be in flight
together and waited for separately. A step that ends an episode resets the env at once with its
reset seed: the obs buffers show the new episode, reward/done/success the step that ended the old.
A worker that dies or stays silent for step_timeout_s is replaced; its in-flight envs come back
done and failed, already reset. Its idle envs lost their state: their next step reports the same.
"""
from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import time

import numpy as np

from dvla_hpc.envs.protocol import EnvSpec
from dvla_hpc.envs.registry import env_spec, make_env
from dvla_hpc.envs.vector_buffers import EnvBuffers, create_shared_block, map_shared_block
from dvla_hpc.envs.vector_process import WorkerHandle, await_ready, readable, spawn_worker, stop_worker
from dvla_hpc.envs.vector_runner import EnvRunner, EnvStepError
from dvla_hpc.envs.vector_wire import (
    OP_FAILED_RESET, OP_RESET, OP_STEP, REPLY_DONE, REPLY_ERROR, Batch, WorkerConfig, pack_batch,
    pack_shutdown, unpack_reply,
)

log = logging.getLogger(__name__)
_STARTUP_TIMEOUT_S = 120.0
_JOIN_TIMEOUT_S = 2.0


class _BufferView:
    """Read-only attribute giving one of the VectorEnv's result arrays."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, vector_env: VectorEnv, owner: type | None = None) -> np.ndarray:
        return vector_env._buffer(self._name)


class VectorEnv:
    def __init__(self, env_name: str, env_kwargs: dict, num_envs: int, num_workers: int,
                 step_timeout_s: float = 30.0, worker_nice: int = 0) -> None:
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        if not isinstance(num_workers, int) or not 0 <= num_workers <= num_envs:
            raise ValueError(f"num_workers must be an int in [0, num_envs={num_envs}], got {num_workers!r}")
        if not step_timeout_s > 0:
            raise ValueError(f"step_timeout_s must be positive, got {step_timeout_s!r}")
        if not isinstance(worker_nice, int) or not 0 <= worker_nice <= 19:
            raise ValueError(f"worker_nice must be an int in [0, 19], got {worker_nice!r}")
        try:
            json.dumps(env_kwargs)
        except TypeError as exc:
            raise ValueError(f"env_kwargs must be JSON-serialisable (they travel to workers): {exc}") from exc
        self.spec: EnvSpec = env_spec(env_name, **env_kwargs)
        self.num_envs, self.num_workers = num_envs, num_workers
        self.worker_restarts = 0
        self._retired_workers_cpu_s = 0.0
        self._env_name, self._env_kwargs, self._step_timeout_s = env_name, dict(env_kwargs), step_timeout_s
        self._worker_nice = worker_nice
        self._closed = False
        self._block_fd: int | None = None  # the shared block's memfd, held while workers may attach
        self._block_path: str | None = None
        self._buffers: EnvBuffers | None = None
        self._runner: EnvRunner | None = None
        self._workers: list[WorkerHandle] = []
        self._next_seq = 1
        self._batch_seq = np.zeros(num_envs, np.int64)  # newest batch that touched each env
        self._lost = np.zeros(num_envs, bool)  # state died with a worker while the env was idle
        try:
            if num_workers == 0:
                self._buffers = EnvBuffers.allocate(self.spec, num_envs)
                self._runner = EnvRunner({}, self._buffers, worker_index=None)
                for env_id in range(num_envs):
                    self._runner.add_env(env_id, make_env(env_name, **env_kwargs))
            else:
                size = EnvBuffers.nbytes(self.spec, num_envs)
                self._block_fd, self._block_path = create_shared_block(size)
                self._buffers = EnvBuffers.over(map_shared_block(self._block_path, size), self.spec, num_envs)
                self._context = mp.get_context("spawn")  # never fork: the parent holds MPI and threads
                for index in range(num_workers):
                    self._workers.append(self._spawn(index))
                self._await_ready(self._workers)
        except BaseException:
            self.close()
            raise

    # --- result buffers (see EnvBuffers): row i is env i ---
    image = _BufferView()  # (N, cameras, H, W, 3) uint8
    proprio = _BufferView()  # (N, P) float32
    task_index = _BufferView()  # (N,) int32
    reward = _BufferView()  # (N,) float32
    done = _BufferView()  # (N,) bool
    success = _BufferView()  # (N,) bool
    failed = _BufferView()  # (N,) bool
    episode_step = _BufferView()  # (N,) int32
    env_steps = _BufferView()  # (N,) int32

    def worker_pids(self) -> list[int]:
        """Process ids of the current workers, indexed by worker; empty when inline."""
        return [w.process.pid for w in self._workers]

    @property
    def shared_block_path(self) -> str | None:
        """Where workers open the shared block holding the buffers; None when inline or closed."""
        return self._block_path

    def reset_async(self, env_ids: np.ndarray, seeds: np.ndarray) -> None:
        ids = self._checked_ids(env_ids)
        seeds = self._checked_seeds(seeds, len(ids), "seeds")
        self._dispatch(ids, np.full(len(ids), OP_RESET, np.uint8), seeds,
                       np.zeros((len(ids), self.spec.action_dim), np.float32))

    def step_async(self, env_ids: np.ndarray, actions: np.ndarray, reset_seeds: np.ndarray) -> None:
        ids = self._checked_ids(env_ids)
        actions = np.asarray(actions, dtype=np.float32)
        if actions.shape != (len(ids), self.spec.action_dim):
            raise ValueError(f"actions must have shape ({len(ids)}, {self.spec.action_dim}), "
                             f"got {actions.shape}")
        ops = np.where(self._lost[ids], OP_FAILED_RESET, OP_STEP).astype(np.uint8)
        self._dispatch(ids, ops, self._checked_seeds(reset_seeds, len(ids), "reset_seeds"), actions)

    def wait(self, env_ids: np.ndarray | None = None) -> None:
        """Block until every env in env_ids (default: all) has its latest result in the buffers."""
        self.wait_any([np.arange(self.num_envs) if env_ids is None else env_ids])

    def wait_any(self, groups: list[np.ndarray], wake=None) -> int | None:
        """Block until every env of one of the groups has its latest result: the first such
        group's index; None if `wake` (anything with a fileno, such as a `WakePipe`) turned
        readable first."""
        if self._closed:
            raise RuntimeError("VectorEnv is closed")
        groups = [self._checked_ids(ids, allow_in_flight=True) for ids in groups]
        while True:
            behind = [self._outstanding(ids) for ids in groups]
            for index, workers in enumerate(behind):
                if not workers:
                    return index
            if not self._pump(list({w.index: w for ws in behind for w in ws}.values()), wake):
                return None

    def _outstanding(self, ids: np.ndarray) -> list[WorkerHandle]:
        """The workers that still owe a result for some env in ids."""
        if not self._workers:
            return []
        seqs, owners = self._batch_seq[ids], ids % self.num_workers
        return [w for w in self._workers if w.completed_seq < seqs[owners == w.index].max(initial=0)]

    def worker_cpu_seconds(self) -> float:
        """CPU seconds the worker processes have used, replaced ones up to their last reading and
        all of them up to close (0 for inline envs, whose CPU is the caller's own)."""
        if self._closed:
            return self._retired_workers_cpu_s
        return self._retired_workers_cpu_s + sum(w.read_cpu() for w in self._workers)

    def close(self) -> None:
        if self._closed:
            return
        self._retired_workers_cpu_s = self.worker_cpu_seconds()
        self._closed = True
        for worker in self._workers:
            try:
                worker.conn.send_bytes(pack_shutdown())
            except OSError:  # its pipe is already broken: the worker is gone, stop_worker reaps it
                pass
        for worker in self._workers:
            stop_worker(worker, grace_s=_JOIN_TIMEOUT_S)
        if self._runner is not None:
            self._runner.close()
        if self._buffers is not None:
            self._buffers.release()
        if self._block_fd is not None:
            os.close(self._block_fd)  # views a caller still holds stay valid; no worker can attach now
            self._block_fd = self._block_path = None

    def __enter__(self) -> VectorEnv:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            try:
                self.close()
            except Exception:
                pass  # interpreter shutdown may already have torn down what close() needs

    # --- dispatch ---
    def _dispatch(self, ids: np.ndarray, ops: np.ndarray, seeds: np.ndarray, actions: np.ndarray) -> None:
        self._lost[ids] = False
        if self._runner is not None:
            self._runner.run(ids, ops, seeds, actions)
            return
        owners = ids % self.num_workers
        for worker in self._workers:
            mine = owners == worker.index
            if mine.any():
                self._send(worker, ids[mine], ops[mine], seeds[mine], actions[mine])

    def _send(self, worker: WorkerHandle, ids: np.ndarray, ops: np.ndarray, seeds: np.ndarray,
              actions: np.ndarray) -> None:
        batch = Batch(seq=self._next_seq, env_ids=ids.astype(np.int32), ops=ops, seeds=seeds, actions=actions)
        self._next_seq += 1
        if not worker.pending:
            worker.last_progress = time.monotonic()
        worker.pending[batch.seq] = batch
        self._batch_seq[ids] = batch.seq
        try:
            worker.conn.send_bytes(pack_batch(batch))
        except OSError as exc:
            self._restart(worker, f"broke its pipe ({exc})")

    # --- replies and faults ---
    def _pump(self, outstanding: list[WorkerHandle], wake=None) -> bool:
        """Read whatever replies arrive before the earliest deadline; replace workers past theirs.
        False when `wake` turned readable and no reply came."""
        now = time.monotonic()
        for worker in outstanding:
            if now - worker.last_progress > self._step_timeout_s:
                self._restart(worker, f"did not answer within step_timeout_s={self._step_timeout_s}")
                return True
        deadline = min(w.last_progress for w in outstanding) + self._step_timeout_s
        handles = [w.conn for w in outstanding] + [w.process.sentinel for w in outstanding]
        ready = readable(handles + ([wake] if wake is not None else []), timeout_s=max(0.0, deadline - now))
        replied = False
        for worker in outstanding:
            if worker.conn in ready or worker.process.sentinel in ready:
                self._drain(worker)
                replied = True
        return replied or wake is None or wake not in ready

    def _drain(self, worker: WorkerHandle) -> None:
        try:
            while readable([worker.conn], 0.0):  # Connection.poll builds a selector a call
                self._handle_reply(worker, worker.conn.recv_bytes())
        except (EOFError, OSError):
            self._restart(worker, "closed its pipe")
            return
        if not worker.process.is_alive():
            self._restart(worker, "exited")

    def _handle_reply(self, worker: WorkerHandle, message: bytes) -> None:
        reply = unpack_reply(message)
        if reply.kind not in (REPLY_DONE, REPLY_ERROR):
            raise RuntimeError(f"worker {worker.index} sent unexpected reply kind {reply.kind}")
        for seq in [s for s in worker.pending if s <= reply.seq]:
            del worker.pending[seq]
        worker.completed_seq = reply.seq
        worker.last_progress = time.monotonic()
        if reply.kind == REPLY_ERROR:
            raise EnvStepError(worker.index, reply.env_id, reply.message)

    def _restart(self, worker: WorkerHandle, reason: str) -> None:
        interrupted = list(worker.pending.values())
        ids = np.concatenate([b.env_ids for b in interrupted]) if interrupted else np.zeros(0, np.int32)
        self._retired_workers_cpu_s += worker.read_cpu()
        stop_worker(worker, grace_s=0.0)
        reason = f"{reason} (exit code {worker.process.exitcode})"
        if worker.completed_seq < worker.recovery_seq:
            raise RuntimeError(f"vector env worker {worker.index} {reason} again while recovering envs "
                               f"{ids.tolist()}; giving up")
        log.warning("vector env worker %d (pid %s, envs %s) %s; restarting it; in-flight envs %s "
                    "come back failed", worker.index, worker.process.pid, worker.env_ids.tolist(), reason,
                    ids.tolist())
        self.worker_restarts += 1
        self._lost[np.setdiff1d(worker.env_ids, ids)] = True
        fresh = self._spawn(worker.index)
        worker.process, worker.conn, worker.pending, worker.cpu_s = fresh.process, fresh.conn, {}, 0.0
        self._await_ready([worker])
        if interrupted:
            worker.recovery_seq = self._next_seq
            self._send(worker, ids, np.full(len(ids), OP_FAILED_RESET, np.uint8),
                       np.concatenate([b.seeds for b in interrupted]),
                       np.zeros((len(ids), self.spec.action_dim), np.float32))

    # --- worker lifecycle ---
    def _spawn(self, index: int) -> WorkerHandle:
        assert self._block_path is not None
        env_ids = np.arange(index, self.num_envs, self.num_workers)
        config = WorkerConfig(index, self._env_name, self._env_kwargs, tuple(env_ids.tolist()), self.num_envs,
                              self._worker_nice)
        process, conn = spawn_worker(self._context, self._block_path, config)
        return WorkerHandle(index=index, env_ids=env_ids, process=process, conn=conn)

    def _await_ready(self, workers: list[WorkerHandle]) -> None:
        await_ready(workers, timeout_s=max(_STARTUP_TIMEOUT_S, self._step_timeout_s))

    # --- argument checks ---
    def _buffer(self, name: str) -> np.ndarray:
        if self._closed:
            raise RuntimeError("VectorEnv is closed")
        return getattr(self._buffers, name)

    def _checked_ids(self, env_ids: np.ndarray, allow_in_flight: bool = False) -> np.ndarray:
        if self._closed:
            raise RuntimeError("VectorEnv is closed")
        ids = np.asarray(env_ids)
        if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
            raise ValueError(f"env_ids must be a 1-D integer array, got shape {ids.shape} dtype {ids.dtype}")
        ids = ids.astype(np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_envs):
            raise ValueError(f"env_ids must lie in [0, {self.num_envs}), got {ids.tolist()}")
        if ids.size > 1 and np.bincount(ids).max() > 1:
            raise ValueError(f"env_ids must not repeat, got {ids.tolist()}")
        if not allow_in_flight and self._workers:
            completed = np.array([w.completed_seq for w in self._workers])[ids % self.num_workers]
            busy = ids[self._batch_seq[ids] > completed]
            if busy.size:
                raise ValueError(f"envs {busy.tolist()} are still in flight; wait() for them first")
        return ids

    @staticmethod
    def _checked_seeds(seeds: np.ndarray, count: int, name: str) -> np.ndarray:
        seeds = np.asarray(seeds)
        if seeds.shape != (count,) or (count and not np.issubdtype(seeds.dtype, np.integer)):
            raise ValueError(f"{name} must be a 1-D integer array of length {count}, got shape {seeds.shape} "
                             f"dtype {seeds.dtype}")
        if count and seeds.min() < 0:
            raise ValueError(f"{name} must be non-negative, got {seeds.tolist()}")
        return seeds.astype(np.int64)
