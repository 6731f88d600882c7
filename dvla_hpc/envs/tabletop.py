"""Tabletop reach: move the effector over the cube the instruction names (MuJoCo physics, top camera)."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields

import mujoco
import numpy as np

from dvla_hpc.envs import tabletop_scene as scene
from dvla_hpc.envs.protocol import EnvSpec, Observation, StepResult

ENV_NAME = "tabletop_reach"
INSTRUCTIONS = tuple(f"reach the {colour} cube" for colour in scene.CUBE_COLOURS)
ACTION_DIM = 2
PROPRIO_DIM = 4  # effector xy / EFFECTOR_LIMIT, effector velocity / top speed
SUCCESS_BONUS = 1.0
_MAX_LAYOUT_ATTEMPTS = 1000


@dataclass(frozen=True)
class TabletopConfig:
    image_size: int = 64
    max_episode_steps: int = 25
    success_radius: float = 0.04  # xy distance effector -> target cube centre
    control_substeps: int = 10  # mj_steps per env step, TIMESTEP each
    max_step_size: float = 0.035  # effector displacement commanded by a unit action
    min_cube_separation: float = 0.09
    min_start_distance: float = 0.09  # effector start -> every cube
    start_jitter: float = 0.02  # the effector starts within this of its home pose (table centre)
    shaped_reward: bool = True  # add progress toward the target to the success reward

    def __post_init__(self) -> None:
        for name in ("image_size", "max_episode_steps", "control_substeps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TabletopConfig.{name} must be a positive int, got {value!r}")
        if not 16 <= self.image_size <= 1024:
            raise ValueError(f"TabletopConfig.image_size must be in [16, 1024], got {self.image_size}")
        if not isinstance(self.start_jitter, (int, float)) or not 0 <= self.start_jitter <= 0.1:
            raise ValueError(f"TabletopConfig.start_jitter must be in [0, 0.1], got {self.start_jitter!r}")
        for name in ("success_radius", "max_step_size", "min_cube_separation", "min_start_distance"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"TabletopConfig.{name} must be a positive number, got {value!r}")
        if self.min_cube_separation < 2 * self.success_radius:
            raise ValueError(
                f"min_cube_separation ({self.min_cube_separation}) must be at least twice success_radius "
                f"({self.success_radius}), or reaching one cube could count for another"
            )
        if self.min_start_distance <= self.success_radius:
            raise ValueError(
                f"min_start_distance ({self.min_start_distance}) must exceed success_radius "
                f"({self.success_radius}), or episodes could start solved"
            )
        if self.min_cube_separation > scene.CUBE_WORKSPACE_HALF:
            raise ValueError(
                f"min_cube_separation ({self.min_cube_separation}) too large for a "
                f"{2 * scene.CUBE_WORKSPACE_HALF} m workspace holding three cubes"
            )

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


def _offscreen_renderer(model: mujoco.MjModel, size: int) -> mujoco.Renderer:
    try:
        return mujoco.Renderer(model, size, size)
    except mujoco.FatalError as exc:
        raise RuntimeError(
            f"offscreen rendering failed with MUJOCO_GL={os.environ.get('MUJOCO_GL')!r}: mujoco picks its GL "
            "backend when first imported, so import dvla_hpc.envs before mujoco or export MUJOCO_GL=egl"
        ) from exc


def _spec_from_config(config: TabletopConfig) -> EnvSpec:
    return EnvSpec(
        image_shape=(config.image_size, config.image_size, 3),
        proprio_dim=PROPRIO_DIM,
        action_dim=ACTION_DIM,
        max_episode_steps=config.max_episode_steps,
        instructions=INSTRUCTIONS,
        name=ENV_NAME,
    )


class TabletopReachEnv:
    """Implements the Env protocol. Task index i names cube i: 0 red, 1 green, 2 blue."""

    def __init__(self, **kwargs: object) -> None:
        self.config = TabletopConfig(**kwargs)
        self.spec = _spec_from_config(self.config)
        self._model = mujoco.MjModel.from_xml_string(scene.build_scene_xml(self.config.image_size))
        self._data = mujoco.MjData(self._model)
        self._renderer: mujoco.Renderer | None = _offscreen_renderer(self._model, self.config.image_size)
        self._cube_qpos_adr = [int(self._model.joint(f"cube{i}_free").qposadr[0]) for i in range(3)]
        self._cube_body_ids = [int(self._model.body(f"cube{i}").id) for i in range(3)]
        effector_joints = [self._model.joint(name) for name in ("effector_x", "effector_y")]
        self._effector_qpos_adr = [int(j.qposadr[0]) for j in effector_joints]
        self._effector_qvel_adr = [int(j.dofadr[0]) for j in effector_joints]
        control_dt = scene.TIMESTEP * self.config.control_substeps
        self._top_speed = self.config.max_step_size / control_dt
        self._target_index = -1
        self._initial_distance = 1.0
        self._distance = 1.0
        self._episode_step = 0
        self._episode_over = True

    @classmethod
    def spec_for(cls, **kwargs: object) -> EnvSpec:
        """The spec these kwargs give, without building physics or a renderer."""
        return _spec_from_config(TabletopConfig(**kwargs))

    # --- privileged state, for tests and the scripted expert ---
    @property
    def target_index(self) -> int:
        return self._target_index

    @property
    def cube_positions(self) -> np.ndarray:
        """(3, 2) cube centres in table xy, from the physics state."""
        return self._data.xpos[self._cube_body_ids, :2].copy()

    @property
    def effector_position(self) -> np.ndarray:
        return self._data.qpos[self._effector_qpos_adr].copy()

    def pixel_of(self, xy: np.ndarray) -> tuple[float, float]:
        """(row, col) of table point xy in the top camera image (orthographic, +y is up)."""
        size, view = self.config.image_size, scene.CAMERA_VIEW_SIZE
        col = (float(xy[0]) / view + 0.5) * size - 0.5
        row = (0.5 - float(xy[1]) / view) * size - 0.5
        return row, col

    def oracle_action_for(self, cube_index: int) -> np.ndarray:
        """Unit-bounded action heading straight for cube cube_index, direction preserved."""
        if cube_index not in (0, 1, 2):
            raise ValueError(f"cube_index must be 0, 1 or 2, got {cube_index!r}")
        delta = self.cube_positions[cube_index] - self.effector_position
        action = delta / self.config.max_step_size
        largest = float(np.max(np.abs(action)))
        if largest > 1.0:
            action /= largest
        return action.astype(np.float32)

    def oracle_action(self) -> np.ndarray:
        self._require_episode()
        return self.oracle_action_for(self._target_index)

    # --- Env protocol ---
    def reset(self, seed: int, task: int | None = None) -> Observation:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        rng = np.random.default_rng(int(seed))
        self._target_index = int(rng.integers(3))
        if task is not None:
            self._target_index = _task_index(task)
        effector = rng.uniform(-self.config.start_jitter, self.config.start_jitter, size=2)
        cubes = self._sample_cube_layout(rng, effector)
        data = self._data
        mujoco.mj_resetData(self._model, data)
        for adr, xy in zip(self._cube_qpos_adr, cubes):
            yaw = rng.uniform(0.0, math.pi / 2)
            data.qpos[adr : adr + 7] = (xy[0], xy[1], scene.CUBE_HALF_SIZE,
                                        math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2))
        data.qpos[self._effector_qpos_adr] = effector
        data.ctrl[:] = effector
        mujoco.mj_forward(self._model, data)
        self._initial_distance = self._target_distance()
        self._distance = self._initial_distance
        self._episode_step = 0
        self._episode_over = False
        return self._observation()

    def step(self, action: np.ndarray) -> StepResult:
        self._require_episode()
        command = np.asarray(action, dtype=np.float64)
        if command.shape != (ACTION_DIM,):
            raise ValueError(f"action must have shape ({ACTION_DIM},), got {command.shape}")
        if not np.all(np.isfinite(command)):
            raise ValueError(f"action must be finite, got {command}")
        command = np.clip(command, -1.0, 1.0)
        target = self.effector_position + command * self.config.max_step_size
        self._data.ctrl[:] = np.clip(target, -scene.EFFECTOR_LIMIT, scene.EFFECTOR_LIMIT)
        mujoco.mj_step(self._model, self._data, nstep=self.config.control_substeps)

        previous, self._distance = self._distance, self._target_distance()
        self._episode_step += 1
        success = self._distance < self.config.success_radius
        reward = SUCCESS_BONUS if success else 0.0
        if self.config.shaped_reward:
            reward += (previous - self._distance) / self._initial_distance
        done = success or self._episode_step >= self.config.max_episode_steps
        self._episode_over = done
        return StepResult(observation=self._observation(), reward=float(reward), done=done, success=success)

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # --- internals ---
    def _require_episode(self) -> None:
        if self._renderer is None:
            raise RuntimeError("TabletopReachEnv is closed")
        if self._episode_over:
            raise RuntimeError("episode is over (or never started): call reset(seed) first")

    def _target_distance(self) -> float:
        return float(np.linalg.norm(self.cube_positions[self._target_index] - self.effector_position))

    def _sample_cube_layout(self, rng: np.random.Generator, effector: np.ndarray) -> np.ndarray:
        """Cubes apart from each other and from the effector's home pose."""
        half, separation = scene.CUBE_WORKSPACE_HALF, self.config.min_cube_separation
        for _ in range(_MAX_LAYOUT_ATTEMPTS):
            cubes = rng.uniform(-half, half, size=(3, 2))
            gaps = [np.linalg.norm(cubes[i] - cubes[j]) for i, j in ((0, 1), (0, 2), (1, 2))]
            reach = np.linalg.norm(cubes - effector, axis=1)
            if min(gaps) >= separation and reach.min() >= self.config.min_start_distance:
                return cubes
        raise RuntimeError(f"no cube layout with separation {separation} m in {_MAX_LAYOUT_ATTEMPTS} tries")

    def _observation(self) -> Observation:
        assert self._renderer is not None
        self._renderer.update_scene(self._data, camera="top")
        image = self._renderer.render()
        velocity = self._data.qvel[self._effector_qvel_adr] / self._top_speed
        proprio = np.concatenate([self.effector_position / scene.EFFECTOR_LIMIT, velocity]).astype(np.float32)
        return Observation(image=image[None], proprio=proprio, task_index=self._target_index)


def _task_index(task: int) -> int:
    if isinstance(task, bool) or not isinstance(task, (int, np.integer)) or not 0 <= task < len(INSTRUCTIONS):
        raise ValueError(f"task must be an index in 0..{len(INSTRUCTIONS) - 1}, got {task!r}")
    return int(task)
