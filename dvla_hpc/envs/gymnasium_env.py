"""Any gymnasium MuJoCo task behind the Env protocol, from rendered pixels or from the state vector.

Imports only numpy, mujoco, gymnasium and the protocol, so tools in a torch-free venv (a Sample
Factory comparison, say) can build the very same rendering env with make_rendering_gym_env.

Pixel tasks see only the image (proprio_dim 0), like a pixel-only Sample Factory run. State tasks
see the gym observation vector as proprio and a blank image that is never rendered: give them a
small image_size (16, with model.patch_size 8) so the unused image costs next to nothing.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import gymnasium  # dvla_hpc.envs has chosen MUJOCO_GL=egl before this imports mujoco
import mujoco
import numpy as np

from dvla_hpc.envs.protocol import EnvSpec, Observation, StepResult

ENV_NAME = "gymnasium"
OBSERVATIONS = ("pixels", "state")


@dataclass(frozen=True)
class _GymInfo:
    """What the protocol needs to know about a gym id, read once per process from an unrendered env."""
    state_dim: int
    action_low: np.ndarray
    action_high: np.ndarray


@functools.lru_cache(maxsize=None)
def _probe(gym_id: str) -> _GymInfo:
    """Check gym_id names a MuJoCo env with Box spaces and bounded actions; no renderer is built."""
    if not isinstance(gym_id, str) or not gym_id:
        raise ValueError(f"gym_id must be a non-empty string, got {gym_id!r}")
    try:
        gymnasium.spec(gym_id)
    except gymnasium.error.Error as exc:
        raise ValueError(f"unknown gymnasium id {gym_id!r}: {exc}") from exc
    try:
        env = gymnasium.make(gym_id)
    except Exception as exc:
        raise ValueError(f"gymnasium id {gym_id!r} could not be built: {exc}") from exc
    try:
        unwrapped = env.unwrapped
        if not (isinstance(getattr(unwrapped, "model", None), mujoco.MjModel)
                and isinstance(getattr(unwrapped, "data", None), mujoco.MjData)):
            raise ValueError(f"gymnasium id {gym_id!r} is not a MuJoCo env (no MjModel/MjData); "
                             "the gymnasium adapter supports MuJoCo tasks only")
        action_space, observation_space = env.action_space, env.observation_space
        if not isinstance(action_space, gymnasium.spaces.Box) or len(action_space.shape) != 1:
            raise ValueError(f"gymnasium id {gym_id!r}: needs a 1-D Box action space, got {action_space}")
        low = np.asarray(action_space.low, dtype=np.float64)
        high = np.asarray(action_space.high, dtype=np.float64)
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
            raise ValueError(f"gymnasium id {gym_id!r}: action bounds must be finite, got {action_space}")
        if not isinstance(observation_space, gymnasium.spaces.Box):
            raise ValueError(
                f"gymnasium id {gym_id!r}: needs a Box observation space, got {observation_space}")
        state_dim = int(np.prod(observation_space.shape))
    finally:
        env.close()
    return _GymInfo(state_dim, low, high)


class _SharedViewerRender(gymnasium.Wrapper):
    """render() as an (H, W, 3) uint8 C-contiguous copy. Envs of one gym id and size in one process
    draw through one offscreen viewer (one GL context), each with its own data and camera.

    On llvmpipe every extra GL context makes every render slower (16 envs with their own contexts
    rendered ~35% slower per frame than one); the frames are identical (tested). The first env to
    render lends its gymnasium viewer; if it closes, the next env to render lends its own."""

    _shared: dict[tuple[str, int], tuple[object, "_SharedViewerRender"]] = {}

    def __init__(self, env: gymnasium.Env, key: tuple[str, int]):
        super().__init__(env)
        self._key = key
        self._camera: mujoco.MjvCamera | None = None

    def render(self):
        inner = self.env.unwrapped
        shared = self._shared.get(self._key)
        if shared is None:
            frame = self.env.render()  # gymnasium builds this env's viewer, which becomes the shared one
            viewer = inner.mujoco_renderer._viewers["rgb_array"]
            self._shared[self._key] = (viewer, self)
            self._camera = viewer.cam
        else:
            viewer = shared[0]
            if self._camera is None:
                self._camera = self._own_camera(viewer)
            viewer.make_context_current()
            viewer.data, viewer.cam = inner.data, self._camera
            frame = viewer.render(render_mode="rgb_array", camera_id=inner.mujoco_renderer.camera_id)
        if frame is None or np.ndim(frame) != 3 or np.shape(frame)[2] != 3:
            raise RuntimeError(f"{self.env.spec.id if self.env.spec else self.env}: render() gave "
                               f"{None if frame is None else np.shape(frame)}, expected (H, W, 3)")
        return np.ascontiguousarray(frame, dtype=np.uint8)

    def _own_camera(self, viewer) -> "mujoco.MjvCamera":
        """The camera gymnasium would give this env: free, at the median of its geoms, its cam config."""
        inner = self.env.unwrapped
        camera = mujoco.MjvCamera()
        camera.type, camera.fixedcamid = mujoco.mjtCamera.mjCAMERA_FREE, -1
        camera.lookat[:] = np.median(inner.data.geom_xpos, axis=0)
        camera.distance = inner.model.stat.extent
        for key, value in (inner.mujoco_renderer.default_cam_config or {}).items():
            if isinstance(value, np.ndarray):
                getattr(camera, key)[:] = value
            else:
                setattr(camera, key, value)
        return camera

    def close(self):
        shared = self._shared.get(self._key)
        if shared is not None and shared[1] is self:
            del self._shared[self._key]
        super().close()


def make_rendering_gym_env(gym_id: str, image_size: int,
                           max_episode_steps: int | None = None) -> gymnasium.Env:
    """gym_id with rgb_array rendering at image_size x image_size; render() gives (H, W, 3) uint8.

    Shadows and multisampling are switched off before any GL context exists: CPU (llvmpipe)
    rendering is 20-30x slower with them. max_episode_steps, if given, replaces gym's time limit."""
    _probe(gym_id)
    _check_positive_int("image_size", image_size)
    extra = {} if max_episode_steps is None else {"max_episode_steps": max_episode_steps}
    env = gymnasium.make(gym_id, render_mode="rgb_array", width=image_size, height=image_size, **extra)
    quality = env.unwrapped.model.vis.quality
    quality.shadowsize = 0
    quality.offsamples = 0
    return _SharedViewerRender(env, (gym_id, image_size))


def render_frame(env: gymnasium.Env) -> np.ndarray:
    """One (H, W, 3) uint8 frame from an env built by make_rendering_gym_env."""
    return np.ascontiguousarray(env.render(), dtype=np.uint8)


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"GymnasiumEnv.{name} must be a positive int, got {value!r}")


class GymnasiumEnv:
    """Implements the Env protocol over a gymnasium MuJoCo env. Actions in [-1, 1] map linearly onto
    the Box action space's [low, high]; the one task (index 0) is the gym id itself."""

    def __init__(self, gym_id: str = "Reacher-v5", observation: str = "pixels", image_size: int = 64,
                 max_episode_steps: int = 50) -> None:
        self.spec = self.spec_for(gym_id=gym_id, observation=observation, image_size=image_size,
                                  max_episode_steps=max_episode_steps)
        info = _probe(gym_id)
        self.gym_id = gym_id
        self.observation = observation
        self._low, self._high = info.action_low, info.action_high
        if observation == "pixels":
            self._env: gymnasium.Env | None = make_rendering_gym_env(gym_id, image_size, max_episode_steps)
        else:
            self._env = gymnasium.make(gym_id, max_episode_steps=max_episode_steps)
        self._action_dtype = self._env.action_space.dtype
        self._episode_step = 0
        self._episode_over = True

    @classmethod
    def spec_for(cls, gym_id: str = "Reacher-v5", observation: str = "pixels", image_size: int = 64,
                 max_episode_steps: int = 50) -> EnvSpec:
        """The spec these kwargs give, without a renderer (the gym env is probed once per process)."""
        if observation not in OBSERVATIONS:
            raise ValueError(f"GymnasiumEnv.observation must be one of {', '.join(OBSERVATIONS)}, "
                             f"got {observation!r}")
        _check_positive_int("image_size", image_size)
        _check_positive_int("max_episode_steps", max_episode_steps)
        info = _probe(gym_id)
        return EnvSpec(
            image_shape=(int(image_size), int(image_size), 3),
            proprio_dim=info.state_dim if observation == "state" else 0,
            action_dim=int(info.action_low.shape[0]),
            max_episode_steps=int(max_episode_steps),
            instructions=(f"gymnasium {gym_id}",),
            name=ENV_NAME,
        )

    def to_gym_action(self, action: np.ndarray) -> np.ndarray:
        """[-1, 1] per dimension (clipped) -> [low, high] of the gym action space."""
        command = np.asarray(action, dtype=np.float64)
        if command.shape != (self.spec.action_dim,):
            raise ValueError(f"action must have shape ({self.spec.action_dim},), got {command.shape}")
        if not np.all(np.isfinite(command)):
            raise ValueError(f"action must be finite, got {command}")
        command = np.clip(command, -1.0, 1.0)
        scaled = self._low + (command + 1.0) * 0.5 * (self._high - self._low)
        return scaled.astype(self._action_dtype)

    # --- Env protocol ---
    def reset(self, seed: int, task: int | None = None) -> Observation:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        if task not in (None, 0):
            raise ValueError(f"a gymnasium env has one task (index 0), got task {task!r}")
        env = self._require_open()
        state, _ = env.reset(seed=int(seed))
        self._episode_step = 0
        self._episode_over = False
        return self._observation(state)

    def step(self, action: np.ndarray) -> StepResult:
        env = self._require_open()
        if self._episode_over:
            raise RuntimeError("episode is over (or never started): call reset(seed) first")
        state, reward, terminated, truncated, info = env.step(self.to_gym_action(action))
        self._episode_step += 1
        success = bool(info.get("success", False) or info.get("is_success", False))
        done = bool(terminated or truncated or self._episode_step >= self.spec.max_episode_steps)
        self._episode_over = done
        return StepResult(observation=self._observation(state), reward=float(reward), done=done,
                          success=success)

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None

    # --- internals ---
    def _require_open(self) -> gymnasium.Env:
        if self._env is None:
            raise RuntimeError("GymnasiumEnv is closed")
        return self._env

    def _observation(self, state: np.ndarray) -> Observation:
        if self.observation == "pixels":
            return Observation(image=render_frame(self._env)[None], proprio=np.zeros(0, np.float32), task_index=0)
        proprio = np.asarray(state, dtype=np.float32).reshape(-1)
        return Observation(image=np.zeros(self.spec.frames_shape, np.uint8), proprio=proprio, task_index=0)
