"""Applies batches of per-env operations to local envs and writes the results into EnvBuffers.

Shared by VectorEnv's inline mode and its worker processes, so both give identical results.
An env that raises during a step, or returns an observation that is not what its spec says (wrong
shape or dtype, NaN or infinite values), loses that episode only: it comes back done and failed,
already reset. An env whose episodes fault MAX_CONSECUTIVE_FAULTS times in a row, or whose reset
fails, is broken: that raises EnvStepError, which ends the job naming the env.
"""
from __future__ import annotations

import numpy as np

from dvla_hpc.envs.protocol import Env, Observation
from dvla_hpc.envs.vector_buffers import EnvBuffers
from dvla_hpc.envs.vector_wire import OP_FAILED_RESET, OP_RESET, OP_STEP

MAX_CONSECUTIVE_FAULTS = 10  # a run of 10 at a 30% fault rate: once in 170,000 episodes


class EnvStepError(RuntimeError):
    """Env code raised. worker_index is None for inline envs."""

    def __init__(self, worker_index: int | None, env_id: int, message: str) -> None:
        where = "inline" if worker_index is None else f"worker {worker_index}"
        super().__init__(f"env {env_id} ({where}) raised: {message}")
        self.worker_index = worker_index
        self.env_id = env_id
        self.detail = message


class EnvRunner:
    def __init__(self, envs: dict[int, Env], buffers: EnvBuffers, worker_index: int | None) -> None:
        self._envs = envs
        self._buffers = buffers
        self._worker_index = worker_index
        self._faulted_in_a_row: dict[int, int] = {}

    def add_env(self, env_id: int, env: Env) -> None:
        self._envs[env_id] = env

    def run(self, env_ids: np.ndarray, ops: np.ndarray, seeds: np.ndarray, actions: np.ndarray) -> None:
        for env_id, op, seed, action in zip(env_ids.tolist(), ops.tolist(), seeds.tolist(), actions):
            try:
                self._apply(env_id, op, seed, action)
            except Exception as exc:
                faults = self._faulted_in_a_row.get(env_id, 0) + 1
                if op != OP_STEP or faults >= MAX_CONSECUTIVE_FAULTS:
                    raise EnvStepError(self._worker_index, env_id, f"{type(exc).__name__}: {exc}") from exc
                self._faulted_in_a_row[env_id] = faults
                self._lose_episode(env_id, seed, exc)

    def close(self) -> None:
        for env in self._envs.values():
            env.close()
        self._envs = {}

    def _lose_episode(self, env_id: int, seed: int, exc: Exception) -> None:
        """The faulted episode ends failed; the env starts the next one (a reset that fails too
        means the env is broken)."""
        try:
            self._apply(env_id, OP_FAILED_RESET, seed, None)
        except Exception as again:
            raise EnvStepError(self._worker_index, env_id, f"{type(exc).__name__}: {exc}; then its reset "
                                                           f"failed: {type(again).__name__}: {again}") from again

    def _apply(self, env_id: int, op: int, seed: int, action: np.ndarray) -> None:
        env, out = self._envs[env_id], self._buffers
        if op == OP_STEP:
            result = env.step(action)  # its observation is checked as it is written (a done step's is not used)
            if result.done:
                self._faulted_in_a_row[env_id] = 0
            out.reward[env_id], out.done[env_id] = result.reward, result.done
            out.success[env_id] = result.success
            out.failed[env_id] = False
            out.env_steps[env_id] = result.env_steps
            if result.done:
                self._write_observation(env_id, env.reset(seed), episode_step=0)
            else:
                self._write_observation(env_id, result.observation, episode_step=out.episode_step[env_id] + 1)
        elif op in (OP_RESET, OP_FAILED_RESET):
            failed = op == OP_FAILED_RESET
            out.reward[env_id], out.success[env_id] = 0.0, False
            out.done[env_id] = out.failed[env_id] = failed
            out.env_steps[env_id] = 0
            self._write_observation(env_id, env.reset(seed), episode_step=0)
        else:
            raise ValueError(f"unknown op code {op}")

    def _check(self, observation: Observation) -> None:
        out = self._buffers
        image, proprio = np.asarray(observation.image), np.asarray(observation.proprio)
        if image.shape != out.image.shape[1:] or image.dtype != out.image.dtype:
            raise ValueError(f"env returned an image of shape {image.shape} {image.dtype}, "
                             f"its spec says {out.image.shape[1:]} {out.image.dtype}")
        if proprio.shape != out.proprio.shape[1:]:
            raise ValueError(f"env returned proprio of shape {proprio.shape}, its spec says {out.proprio.shape[1:]}")
        if not np.isfinite(proprio).all():
            raise ValueError(f"env returned non-finite proprio {proprio}")

    def _write_observation(self, env_id: int, observation: Observation, episode_step: int) -> None:
        out = self._buffers
        self._check(observation)
        out.image[env_id] = observation.image
        out.proprio[env_id] = observation.proprio
        out.task_index[env_id] = observation.task_index
        out.episode_step[env_id] = episode_step
