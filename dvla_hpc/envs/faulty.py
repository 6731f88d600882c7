"""Test-only env: tabletop_reach that crashes, hangs, raises, stalls or returns a bad observation
(NaN proprio, a misshapen image) on cue, to exercise fault handling.

The fault fires when the episode's reset seed equals fault_seed (any seed if None), the seed falls
in the `fault_rate` share of seeds that fault (a hash of the seed decides, so a rerun faults alike),
and the episode has taken fault_step steps (0 means during reset). A worker restarted after a
fault resets its envs with fresh seeds, so one configured fault fires once per matching episode.
"""
from __future__ import annotations

import dataclasses
import os
import time
import zlib

import numpy as np

from dvla_hpc.envs.protocol import EnvSpec, Observation, StepResult
from dvla_hpc.envs.tabletop import TabletopReachEnv

ENV_NAME = "debug_faulty"
FAULT_KINDS = ("none", "crash", "hang", "slow", "raise", "nan", "shape")
FAULT_KWARGS = ("fault", "fault_step", "fault_seed", "fault_seconds", "fault_rate")
CRASH_EXIT_CODE = 17


class FaultInjected(RuntimeError):
    """What the 'raise' fault throws: stands in for a bug in env code."""


class FaultyEnv:
    def __init__(
        self,
        fault: str = "none",
        fault_step: int = 1,
        fault_seed: int | None = None,
        fault_seconds: float | None = None,  # sleep length; default 3600 for 'hang', 0.5 for 'slow'
        fault_rate: float = 1.0,
        **tabletop_kwargs: object,
    ) -> None:
        _validate(fault, fault_step, fault_seed, fault_seconds)
        if not 0.0 <= fault_rate <= 1.0:
            raise ValueError(f"debug_faulty: fault_rate must be in [0, 1], got {fault_rate!r}")
        self._fault = fault
        self._fault_rate = fault_rate
        self._fault_step = fault_step
        self._fault_seed = fault_seed
        default_seconds = 3600.0 if fault == "hang" else 0.5
        self._fault_seconds = default_seconds if fault_seconds is None else float(fault_seconds)
        self._inner = TabletopReachEnv(**tabletop_kwargs)
        self.spec = _renamed(self._inner.spec)
        self._seed = -1
        self._steps = 0

    @staticmethod
    def spec_for(fault: str = "none", fault_step: int = 1, fault_seed: int | None = None,
                 fault_seconds: float | None = None, fault_rate: float = 1.0,
                 **tabletop_kwargs: object) -> EnvSpec:
        _validate(fault, fault_step, fault_seed, fault_seconds)
        return _renamed(TabletopReachEnv.spec_for(**tabletop_kwargs))

    def reset(self, seed: int, task: int | None = None) -> Observation:
        self._seed, self._steps = int(seed), 0
        if self._fires():
            self._fault_now()
        return self._inner.reset(seed, task)

    def step(self, action: np.ndarray) -> StepResult:
        self._steps += 1
        fires = self._fires()
        if fires:
            self._fault_now()
        result = self._inner.step(action)
        if fires and self._fault == "nan":
            result.observation.proprio = np.full_like(result.observation.proprio, np.nan)
        if fires and self._fault == "shape":
            result.observation.image = result.observation.image[..., :1, :]
        return result

    def oracle_action(self) -> np.ndarray:
        return self._inner.oracle_action()

    def close(self) -> None:
        self._inner.close()

    def _fires(self) -> bool:
        if self._fault == "none" or self._steps != self._fault_step:
            return False
        if self._fault_seed is not None and self._seed != self._fault_seed:
            return False
        return seed_faults(self._seed, self._fault_rate)

    def _fault_now(self) -> None:
        """The faults that strike before the step's result exists: crash, raise, hang, slow."""
        if self._fault in ("nan", "shape"):
            return
        if self._fault == "crash":
            os._exit(CRASH_EXIT_CODE)
        if self._fault == "raise":
            raise FaultInjected(f"injected fault at step {self._steps} of the episode with seed {self._seed}")
        time.sleep(self._fault_seconds)  # 'hang' and 'slow' differ only in the duration configured


def seed_faults(seed: int, rate: float) -> bool:
    """Whether episodes reset with `seed` fall in the `rate` share that fault (the same on every run)."""
    return zlib.crc32(int(seed).to_bytes(8, "little", signed=True)) / 2**32 < rate


def _renamed(spec: EnvSpec) -> EnvSpec:
    return dataclasses.replace(spec, name=ENV_NAME)


def _validate(fault: str, fault_step: int, fault_seed: int | None, fault_seconds: float | None) -> None:
    if fault not in FAULT_KINDS:
        raise ValueError(f"debug_faulty: fault must be one of {FAULT_KINDS}, got {fault!r}")
    if not isinstance(fault_step, int) or fault_step < 0:
        raise ValueError(f"debug_faulty: fault_step must be a non-negative int, got {fault_step!r}")
    if fault_seed is not None and not isinstance(fault_seed, int):
        raise ValueError(f"debug_faulty: fault_seed must be an int or None, got {fault_seed!r}")
    if fault_seconds is not None and (not isinstance(fault_seconds, (int, float)) or fault_seconds < 0):
        raise ValueError(f"debug_faulty: fault_seconds must be a non-negative number, got {fault_seconds!r}")
