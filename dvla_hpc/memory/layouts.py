"""The three slab kinds that move between lanes: observations, actions, finished episodes."""
from __future__ import annotations

from enum import IntEnum

import numpy as np

from dvla_hpc.envs.protocol import EnvSpec
from dvla_hpc.memory.slab_pool import SlabLayout

MAGIC = 0x44564C41  # "DVLA"
HEADER_WORDS = 16


class SlabKind(IntEnum):
    OBSERVATIONS = 1
    ACTIONS = 2
    EPISODE = 3


class H(IntEnum):
    """Word positions in every slab's int64 header."""
    MAGIC = 0
    KIND = 1
    SAMPLER = 2  # sampler id (the sim rank in MPI mode)
    HALF = 3  # which half of the sampler's envs
    COUNT = 4  # envs in an observation/action slab; steps in an episode slab
    STEP = 5  # sampler step counter
    TASK = 6
    SUCCESS = 7
    FAILED = 8
    GROUP = 9  # GRPO group key
    SEED = 10
    ENV = 11
    EPISODE_ID = 12
    ROUND = 13  # sync mode: the sampler's round; its observations wait for weights of that round
    ENV_STEPS = 14  # an episode's simulator steps (its COUNT steps are decisions: chunks of actions)


PARKED = -1  # group key of an observation row whose env starts no new episode (sync mode)


def observation_layout(spec: EnvSpec, envs_per_half: int) -> SlabLayout:
    n = envs_per_half
    return SlabLayout("observations", [
        ("header", np.int64, (HEADER_WORDS,)),
        ("env_ids", np.int32, (n,)),
        ("image", np.uint8, (n, *spec.frames_shape)),
        ("env_steps", np.int32, (n,)),
        ("proprio", np.float32, (n, spec.proprio_dim)),
        ("task", np.int32, (n,)),
        ("reward", np.float32, (n,)),
        ("done", np.bool_, (n,)),
        ("success", np.bool_, (n,)),
        ("failed", np.bool_, (n,)),
        ("group", np.int64, (n,)),
        ("seed", np.int64, (n,)),
    ])


def action_layout(spec: EnvSpec, envs_per_half: int) -> SlabLayout:
    return SlabLayout("actions", [
        ("header", np.int64, (HEADER_WORDS,)),
        ("action", np.float32, (envs_per_half, spec.action_dim)),
    ])


def episode_layout(spec: EnvSpec) -> SlabLayout:
    t = spec.max_episode_steps
    return SlabLayout("episode", [
        ("header", np.int64, (HEADER_WORDS,)),
        ("image", np.uint8, (t, *spec.frames_shape)),
        ("proprio", np.float32, (t, spec.proprio_dim)),
        ("tokens", np.int64, (t, spec.action_dim)),
        ("logp", np.float32, (t, spec.action_dim)),
        ("action", np.float32, (t, spec.action_dim)),
        ("reward", np.float32, (t,)),
        ("version", np.int64, (t,)),
        ("env_steps", np.int32, (t,)),
    ])


def stamp(header: np.ndarray, kind: SlabKind) -> None:
    header[H.MAGIC] = MAGIC
    header[H.KIND] = kind


class SlabError(ValueError):
    pass


def validate(header: np.ndarray, kind: SlabKind, max_count: int, origin: str) -> None:
    """Check a received slab's header before any other byte of it is trusted."""
    if header[H.MAGIC] != MAGIC:
        raise SlabError(f"{origin}: bad magic {int(header[H.MAGIC]):#x} in a {kind.name.lower()} slab")
    if header[H.KIND] != kind:
        raise SlabError(f"{origin}: expected a {kind.name.lower()} slab, got kind {int(header[H.KIND])}")
    if not 0 < header[H.COUNT] <= max_count:
        raise SlabError(f"{origin}: {kind.name.lower()} slab count {int(header[H.COUNT])} "
                        f"outside 1..{max_count}")
