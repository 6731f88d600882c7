"""Envs by name: build one, or get its spec cheaply (no physics, no renderer)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from dvla_hpc.envs.action_chunk import ActionChunkEnv, chunked_spec
from dvla_hpc.envs.faulty import FAULT_KWARGS, FaultyEnv
from dvla_hpc.envs.gymnasium_env import GymnasiumEnv
from dvla_hpc.envs.libero_env import LiberoEnv
from dvla_hpc.envs.protocol import Env, EnvSpec
from dvla_hpc.envs.tabletop import TabletopConfig, TabletopReachEnv


@dataclass(frozen=True)
class _Entry:
    factory: Callable[..., Env]
    spec_for: Callable[..., EnvSpec]
    kwarg_names: tuple[str, ...]


_TABLETOP_KWARGS = TabletopConfig.field_names()
_REGISTRY: dict[str, _Entry] = {
    "tabletop_reach": _Entry(TabletopReachEnv, TabletopReachEnv.spec_for, _TABLETOP_KWARGS),
    "debug_faulty": _Entry(FaultyEnv, FaultyEnv.spec_for, FAULT_KWARGS + _TABLETOP_KWARGS),
    "gymnasium": _Entry(GymnasiumEnv, GymnasiumEnv.spec_for,
                        ("gym_id", "observation", "image_size", "max_episode_steps")),
    "libero": _Entry(LiberoEnv, LiberoEnv.spec_for,
                     ("suite", "tasks", "cameras", "image_size", "fast_render", "max_episode_steps")),
}


def known_env_names() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def make_env(name: str, action_chunk: int = 1, **kwargs: object) -> Env:
    """`action_chunk` = k > 1 wraps the env so that one action is k actions run open-loop."""
    env = _lookup(name, kwargs).factory(**kwargs)
    return ActionChunkEnv(env, action_chunk) if action_chunk > 1 else env


def env_spec(name: str, action_chunk: int = 1, **kwargs: object) -> EnvSpec:
    spec = _lookup(name, kwargs).spec_for(**kwargs)
    return chunked_spec(spec, action_chunk) if action_chunk > 1 else spec


def _lookup(name: str, kwargs: dict[str, object]) -> _Entry:
    entry = _REGISTRY.get(name)
    if entry is None:
        raise ValueError(f"unknown env name {name!r}; known env names: {', '.join(known_env_names())}")
    unknown = sorted(set(kwargs) - set(entry.kwarg_names))
    if unknown:
        raise ValueError(
            f"unknown kwarg(s) {', '.join(map(repr, unknown))} for env {name!r}; "
            f"accepted: {', '.join(entry.kwarg_names)}"
        )
    return entry
