"""Applies batches of per-env operations to local envs and writes the results into EnvBuffers.

Shared by VectorEnv's inline mode and its worker processes, so both give identical results.
"""
from __future__ import annotations

import numpy as np

from dvla_hpc.envs.protocol import Env, Observation
from dvla_hpc.envs.vector_buffers import EnvBuffers
from dvla_hpc.envs.vector_wire import OP_FAILED_RESET, OP_RESET, OP_STEP


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

    def add_env(self, env_id: int, env: Env) -> None:
        self._envs[env_id] = env

    def run(self, env_ids: np.ndarray, ops: np.ndarray, seeds: np.ndarray, actions: np.ndarray) -> None:
        for env_id, op, seed, action in zip(env_ids.tolist(), ops.tolist(), seeds.tolist(), actions):
            try:
                self._apply(env_id, op, seed, action)
            except Exception as exc:
                raise EnvStepError(self._worker_index, env_id, f"{type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        for env in self._envs.values():
            env.close()
        self._envs = {}

    def _apply(self, env_id: int, op: int, seed: int, action: np.ndarray) -> None:
        env, out = self._envs[env_id], self._buffers
        if op == OP_STEP:
            result = env.step(action)
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

    def _write_observation(self, env_id: int, observation: Observation, episode_step: int) -> None:
        out = self._buffers
        if observation.image.shape != out.image.shape[1:]:
            raise ValueError(f"env returned an image of shape {observation.image.shape}, "
                             f"its spec says {out.image.shape[1:]}")
        out.image[env_id] = observation.image
        out.proprio[env_id] = observation.proprio
        out.task_index[env_id] = observation.task_index
        out.episode_step[env_id] = episode_step
