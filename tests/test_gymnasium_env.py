"""The gymnasium adapter: any gymnasium MuJoCo task behind the Env protocol, pixels or state."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import gymnasium
import numpy as np
import pytest

from dvla_hpc.config.loader import load_config
from dvla_hpc.envs.gymnasium_env import GymnasiumEnv, make_rendering_gym_env
from dvla_hpc.envs.registry import env_spec, known_env_names, make_env
from dvla_hpc.output.trajectory_reader import iter_episodes
from dvla_hpc.runtime.blueprint import env_kwargs

REPO = Path(__file__).resolve().parents[1]
REACHER_STATE_DIM = 10


@pytest.fixture(scope="module")
def pixel_env():
    env = make_env("gymnasium", gym_id="Reacher-v5", observation="pixels", image_size=32)
    yield env
    env.close()


@pytest.fixture(scope="module")
def state_env():
    env = make_env("gymnasium", gym_id="Reacher-v5", observation="state", image_size=16)
    yield env
    env.close()


class ActionSpy(gymnasium.Wrapper):
    """Records the actions the gym env receives, then steps it with them clipped to its space."""

    def __init__(self, env: gymnasium.Env):
        super().__init__(env)
        self.received: list[np.ndarray] = []

    def step(self, action):
        self.received.append(np.array(action, copy=True))
        space = self.env.action_space
        return self.env.step(np.clip(action, space.low, space.high).astype(space.dtype))


def test_registered_with_a_cheap_spec_in_both_modes():
    assert "gymnasium" in known_env_names()
    pixels = env_spec("gymnasium", gym_id="Reacher-v5", observation="pixels", image_size=64,
                      max_episode_steps=50)
    assert pixels.image_shape == (64, 64, 3)
    assert pixels.proprio_dim == 0
    assert pixels.action_dim == 2
    assert pixels.max_episode_steps == 50
    assert pixels.instructions == ("gymnasium Reacher-v5",)
    state = env_spec("gymnasium", observation="state", image_size=16, max_episode_steps=7)
    assert state.image_shape == (16, 16, 3)
    assert state.proprio_dim == REACHER_STATE_DIM
    assert state.max_episode_steps == 7
    assert GymnasiumEnv.spec_for() == pixels


def test_pixel_observations_are_rendered_frames_with_no_proprio(pixel_env):
    first = pixel_env.reset(0)
    assert first.image.shape == (1, 32, 32, 3) and first.image.dtype == np.uint8
    assert first.proprio.shape == (0,) and first.proprio.dtype == np.float32
    assert first.task_index == 0
    assert first.image.std() > 5, "the frame should show a scene, not a blank"
    moved = first
    for _ in range(5):
        result = pixel_env.step(np.array([1.0, -1.0], dtype=np.float32))
        moved = result.observation
    assert not np.array_equal(moved.image, first.image), "the arm moved, so the frame must change"
    assert np.isfinite(result.reward) and result.success is False


def test_state_observations_are_the_gym_vector_and_a_blank_image(state_env):
    first = state_env.reset(0)
    assert first.proprio.shape == (REACHER_STATE_DIM,) and first.proprio.dtype == np.float32
    assert first.image.shape == (1, 16, 16, 3) and first.image.dtype == np.uint8
    assert not first.image.any()
    reference = gymnasium.make("Reacher-v5")
    try:
        expected, _ = reference.reset(seed=0)
    finally:
        reference.close()
    np.testing.assert_allclose(first.proprio, expected.astype(np.float32))


def test_same_seed_same_initial_state_different_seed_different(pixel_env, state_env):
    for env, field in ((pixel_env, "image"), (state_env, "proprio")):
        a = getattr(env.reset(5), field).copy()
        env.step(np.zeros(2, dtype=np.float32))
        b = getattr(env.reset(5), field).copy()
        c = getattr(env.reset(6), field).copy()
        assert np.array_equal(a, b), f"{field}: same seed must give the same first observation"
        assert not np.array_equal(a, c), f"{field}: different seeds must give different starts"


def test_unit_actions_map_linearly_onto_the_gym_bounds():
    env = GymnasiumEnv(gym_id="InvertedPendulum-v5", observation="state", image_size=16)
    try:
        space = env._env.action_space
        assert space.low[0] == -3.0 and space.high[0] == 3.0  # a non-unit range, so mapping shows
        spy = ActionSpy(env._env)
        env._env = spy
        env.reset(0)
        for action in (-1.0, 1.0, 0.0, 0.5, 7.0):
            env.step(np.array([action], dtype=np.float32))
        received = np.concatenate(spy.received)
        np.testing.assert_allclose(received, [-3.0, 3.0, 0.0, 1.5, 3.0], atol=1e-6)
    finally:
        env.close()
    # asymmetric bounds: -1 -> low, +1 -> high, 0 -> the midpoint
    env = GymnasiumEnv(observation="state", image_size=16)
    try:
        env._low, env._high = np.array([0.0, -2.0]), np.array([1.0, 4.0])
        np.testing.assert_allclose(env.to_gym_action(np.array([-1.0, -1.0])), [0.0, -2.0])
        np.testing.assert_allclose(env.to_gym_action(np.array([1.0, 1.0])), [1.0, 4.0])
        np.testing.assert_allclose(env.to_gym_action(np.array([0.0, 0.0])), [0.5, 1.0])
        with pytest.raises(ValueError, match="shape"):
            env.to_gym_action(np.zeros(3))
    finally:
        env.close()


def test_done_exactly_at_max_episode_steps_even_past_gyms_own_limit():
    env = make_env("gymnasium", observation="state", image_size=16, max_episode_steps=60)
    try:  # Reacher-v5's own time limit is 50 steps; ours replaces it
        env.reset(1)
        dones = [env.step(np.zeros(2, dtype=np.float32)).done for _ in range(60)]
        assert dones == [False] * 59 + [True]
        with pytest.raises(RuntimeError, match="reset"):
            env.step(np.zeros(2, dtype=np.float32))
    finally:
        env.close()
    short = make_env("gymnasium", observation="state", image_size=16, max_episode_steps=3)
    try:
        short.reset(1)
        assert [short.step(np.zeros(2)).done for _ in range(3)] == [False, False, True]
    finally:
        short.close()


def test_registry_rejects_unknown_kwargs_and_bad_values():
    with pytest.raises(ValueError, match="unknown kwarg.*shaped_reward"):
        env_spec("gymnasium", shaped_reward=True)
    with pytest.raises(ValueError, match="observation"):
        env_spec("gymnasium", observation="depth")
    with pytest.raises(ValueError, match="image_size"):
        env_spec("gymnasium", image_size=0)


def test_unknown_or_non_mujoco_gym_ids_name_the_id():
    with pytest.raises(ValueError, match="NoSuchTask-v0"):
        env_spec("gymnasium", gym_id="NoSuchTask-v0")
    with pytest.raises(ValueError, match="CartPole-v1.*MuJoCo"):
        env_spec("gymnasium", gym_id="CartPole-v1")
    with pytest.raises(ValueError, match="NoSuchTask-v0"):
        make_rendering_gym_env("NoSuchTask-v0", 32)


def test_envs_sharing_one_viewer_render_what_each_renders_alone():
    def solo(seed):
        env = make_rendering_gym_env("Reacher-v5", 24)
        try:
            env.reset(seed=seed)
            return env.render()
        finally:
            env.close()

    ref_a, ref_b = solo(1), solo(2)
    assert ref_a.shape == (24, 24, 3) and ref_a.dtype == np.uint8 and ref_a.flags.c_contiguous
    assert not np.array_equal(ref_a, ref_b)
    a, b = make_rendering_gym_env("Reacher-v5", 24), make_rendering_gym_env("Reacher-v5", 24)
    try:
        assert a.unwrapped.model.vis.quality.shadowsize == 0
        assert a.unwrapped.model.vis.quality.offsamples == 0
        a.reset(seed=1)
        b.reset(seed=2)
        first_a, first_b, again_a = a.render(), b.render(), a.render()
        assert np.array_equal(first_a, ref_a) and np.array_equal(again_a, ref_a)
        assert np.array_equal(first_b, ref_b)
        a.close()  # the env whose viewer was shared goes; b goes on with a viewer of its own
        assert np.array_equal(b.render(), ref_b)
        c = make_rendering_gym_env("Reacher-v5", 24)
        c.reset(seed=1)
        assert np.array_equal(c.render(), ref_a) and np.array_equal(b.render(), ref_b)
        c.close()
    finally:
        a.close()
        b.close()


def test_config_wires_only_the_gymnasium_kwargs():
    cfg = load_config(REPO / "configs" / "reacher_pixels.yaml")
    assert cfg.env.name == "gymnasium" and cfg.env.observation == "pixels"
    assert env_kwargs(cfg) == {"gym_id": "Reacher-v5", "observation": "pixels", "image_size": 64,
                               "max_episode_steps": 50}
    spec = env_spec(cfg.env.name, **env_kwargs(cfg))
    assert spec.proprio_dim == 0 and spec.image_shape == (64, 64, 3)
    state = load_config(REPO / "configs" / "reacher_pixels.yaml",
                        ["env.observation=state", "env.image_size=16", "model.encoder=film_keypoints",
                         "model.patch_size=8"])
    assert env_kwargs(state)["observation"] == "state"


@pytest.mark.slow
def test_end_to_end_pixel_run_with_no_proprio(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "dvla_hpc.main", "--config", str(REPO / "configs" / "reacher_pixels.yaml"),
           "--out", str(out), "run.total_env_steps=400", "env.envs_per_sampler=4",
           "env.workers_per_sampler=1", "env.image_size=40", "model.patch_size=8",
           "env.max_episode_steps=20", "learn.group_size=2", "learn.groups_per_update=2",
           "learn.minibatch_size=40", "run.progress_bar=false", "output.record_every=1",
           "run.metrics_every_s=0.5"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PMI_", "PMIX_"))}
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env_steps"] >= 400
    assert "env_steps_per_second" in done.stdout
    episodes = list(iter_episodes(out / "trajectories"))
    assert episodes, "no trajectories were written"
    for episode in episodes:
        assert episode.images.shape[1:] == (1, 40, 40, 3)
        assert episode.proprio.shape == (episode.images.shape[0], 0)
        assert episode.instruction == "gymnasium Reacher-v5"
