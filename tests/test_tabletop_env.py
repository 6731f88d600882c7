import numpy as np
import pytest

from dvla_hpc.envs.faulty import FaultInjected
from dvla_hpc.envs.registry import env_spec, known_env_names, make_env
from dvla_hpc.envs.tabletop import TabletopReachEnv
from dvla_hpc.envs.tabletop_scene import CUBE_HALF_SIZE

# Saturated-colour masks for cube i (0 red, 1 green, 2 blue) and the near-white effector.
COLOUR_MASKS = (
    lambda im: (im[..., 0] > 150) & (im[..., 1] < 80) & (im[..., 2] < 80),
    lambda im: (im[..., 1] > 150) & (im[..., 0] < 80) & (im[..., 2] < 80),
    lambda im: (im[..., 2] > 150) & (im[..., 0] < 80) & (im[..., 1] < 80),
)


def white_mask(image: np.ndarray) -> np.ndarray:
    return np.all(image > 200, axis=-1)


@pytest.fixture(scope="module")
def env():
    environment = TabletopReachEnv()
    yield environment
    environment.close()


def run_episode(env, seed, policy):
    """Steps policy(env) until done; returns (total reward, last StepResult, number of steps)."""
    env.reset(seed)
    total, steps = 0.0, 0
    while True:
        result = env.step(policy(env))
        total, steps = total + result.reward, steps + 1
        if result.done:
            return total, result, steps


def test_same_seed_gives_identical_first_observation(env):
    first = env.reset(11)
    env.step(np.array([1.0, -1.0]))
    again = env.reset(11)
    other_instance = TabletopReachEnv()
    fresh = other_instance.reset(11)
    other_instance.close()
    for obs in (again, fresh):
        np.testing.assert_array_equal(obs.image, first.image)
        np.testing.assert_array_equal(obs.proprio, first.proprio)
        assert obs.task_index == first.task_index


def test_different_seeds_give_different_layouts_and_tasks(env):
    layouts, tasks, images = [], set(), []
    for seed in range(30):
        obs = env.reset(seed)
        layouts.append(env.cube_positions)
        tasks.add(obs.task_index)
        images.append(obs.image)
    assert tasks == {0, 1, 2}
    for a in range(30):
        for b in range(a + 1, 30):
            assert not np.allclose(layouts[a], layouts[b])
    assert len({image.tobytes() for image in images}) == 30


def test_observation_matches_spec(env):
    obs = env.reset(0)
    assert obs.image.shape == env.spec.frames_shape == (1, *env.spec.image_shape) and obs.image.dtype == np.uint8
    assert obs.proprio.shape == (env.spec.proprio_dim,) and obs.proprio.dtype == np.float32
    assert env.spec.instructions[obs.task_index].endswith(("red cube", "green cube", "blue cube"))
    assert env.spec.instructions == ("reach the red cube", "reach the green cube", "reach the blue cube")
    np.testing.assert_allclose(obs.proprio[:2] * 0.18, env.effector_position, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_each_cube_and_the_effector_are_drawn_where_they_are(env, seed):
    obs = env.reset(seed)
    for cube, mask_of in enumerate(COLOUR_MASKS):
        rows, cols = np.nonzero(mask_of(obs.image[0]))
        assert len(rows) >= 9, f"cube {cube} covers only {len(rows)} saturated pixels"
        expected_row, expected_col = env.pixel_of(env.cube_positions[cube])
        assert abs(rows.mean() - expected_row) < 1.5 and abs(cols.mean() - expected_col) < 1.5
    rows, cols = np.nonzero(white_mask(obs.image[0]))
    assert len(rows) >= 4
    expected_row, expected_col = env.pixel_of(env.effector_position)
    assert abs(rows.mean() - expected_row) < 1.5 and abs(cols.mean() - expected_col) < 1.5


def test_oracle_reaches_the_named_cube_and_earns_about_two(env):
    successes = 0
    for seed in range(40):
        total, last, _ = run_episode(env, seed, lambda e: e.oracle_action())
        if last.success:
            successes += 1
            assert 1.5 < total < 2.05
            distance = np.linalg.norm(env.cube_positions[env.target_index] - env.effector_position)
            assert distance < env.config.success_radius
    assert successes >= 38


def test_success_flag_is_exactly_being_near_the_target(env):
    parked_on_wrong_cube = 0
    for seed in range(20):
        env.reset(seed)
        wrong = (env.target_index + 1) % 3
        while True:
            result = env.step(env.oracle_action_for(wrong))
            target_distance = np.linalg.norm(env.cube_positions[env.target_index] - env.effector_position)
            assert result.success == (target_distance < env.config.success_radius)
            if result.done:
                break
        wrong_distance = np.linalg.norm(env.cube_positions[wrong] - env.effector_position)
        if not result.success and wrong_distance < env.config.success_radius:
            parked_on_wrong_cube += 1
    assert parked_on_wrong_cube >= 15  # most episodes really sat on the wrong cube, unrewarded


def test_ignoring_the_instruction_succeeds_about_a_third_of_the_time(env):
    rng = np.random.default_rng(0)
    successes = 0
    for seed in range(60):
        cube = int(rng.integers(3))
        _, last, _ = run_episode(env, 1000 + seed, lambda e: e.oracle_action_for(cube))
        successes += last.success
    assert 0.15 <= successes / 60 <= 0.55


def test_actions_are_clipped_and_move_the_effector_by_physics(env):
    env.reset(5)
    start = env.effector_position
    clipped = env.step(np.array([7.0, -7.0]))
    moved = env.effector_position - start
    env.reset(5)
    unit = env.step(np.array([1.0, -1.0]))
    np.testing.assert_array_equal(clipped.observation.image, unit.observation.image)
    np.testing.assert_array_equal(clipped.observation.proprio, unit.observation.proprio)
    limit = env.config.max_step_size
    assert 0.8 * limit < moved[0] <= 1.01 * limit and -1.01 * limit <= moved[1] < -0.8 * limit


def test_cubes_rest_on_the_table_while_the_effector_moves(env):
    env.reset(8)
    before = env.cube_positions
    for _ in range(10):
        env.step(np.array([0.5, 0.5]))
    np.testing.assert_allclose(env.cube_positions, before, atol=1e-3)
    cube_heights = env._data.xpos[env._cube_body_ids, 2]
    np.testing.assert_allclose(cube_heights, CUBE_HALF_SIZE, atol=2e-3)


def test_episode_ends_at_the_step_limit_and_must_be_reset():
    env = TabletopReachEnv(max_episode_steps=4, image_size=32)
    env.reset(3)
    results = [env.step(np.zeros(2)) for _ in range(4)]
    assert [r.done for r in results] == [False, False, False, True]
    assert not any(r.success for r in results)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(2))
    env.close()


def test_bad_inputs_are_rejected_with_clear_errors(env):
    env.reset(0)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(3))
    with pytest.raises(ValueError, match="finite"):
        env.step(np.array([np.nan, 0.0]))
    with pytest.raises(ValueError, match="seed"):
        env.reset(-1)
    with pytest.raises(ValueError, match="image_size"):
        TabletopReachEnv.spec_for(image_size=0)
    with pytest.raises(ValueError, match="success_radius"):
        TabletopReachEnv.spec_for(success_radius=0.06)


def test_spec_for_agrees_with_a_built_env():
    built = TabletopReachEnv(image_size=32, max_episode_steps=7)
    assert TabletopReachEnv.spec_for(image_size=32, max_episode_steps=7) == built.spec
    assert built.reset(0).image.shape == (1, 32, 32, 3)
    built.close()


def test_registry_builds_by_name_and_names_bad_input():
    assert set(known_env_names()) == {"tabletop_reach", "debug_faulty", "gymnasium", "libero"}
    assert env_spec("tabletop_reach", image_size=48).image_shape == (48, 48, 3)
    assert env_spec("debug_faulty", fault="hang").name == "debug_faulty"
    with pytest.raises(ValueError, match="tabletop_reach"):
        env_spec("no_such_env")
    with pytest.raises(ValueError, match="colour_count"):
        make_env("tabletop_reach", colour_count=4)
    with pytest.raises(ValueError, match="fault"):
        env_spec("debug_faulty", fault="explode")


def test_faulty_env_raises_at_the_configured_step_only_for_its_seed():
    env = make_env("debug_faulty", fault="raise", fault_step=2, fault_seed=9, image_size=32)
    env.reset(8)
    for _ in range(3):
        env.step(np.zeros(2))  # another seed: no fault
    env.reset(9)
    env.step(np.zeros(2))
    with pytest.raises(FaultInjected, match="seed 9"):
        env.step(np.zeros(2))
    env.close()


def test_reset_to_a_chosen_task_keeps_the_seeded_layout(env):
    drawn = env.reset(7)
    layout = env.cube_positions.copy()
    for task in range(3):
        obs = env.reset(7, task=task)
        assert obs.task_index == task
        np.testing.assert_array_equal(env.cube_positions, layout)
    assert env.reset(7, task=drawn.task_index).task_index == drawn.task_index
    with pytest.raises(ValueError, match="task"):
        env.reset(7, task=3)


RENDER_FRAMES = """
import hashlib, os, sys
import numpy as np
from dvla_hpc.envs.tabletop import TabletopReachEnv
env = TabletopReachEnv()
frames, rng = [env.reset(3).image], np.random.default_rng(0)
for _ in range(5):
    frames.append(env.step(rng.uniform(-0.5, 0.5, env.spec.action_dim).astype(np.float32)).observation.image)
print(os.environ["LP_NUM_THREADS"], hashlib.sha256(np.stack(frames).tobytes()).hexdigest())
"""


def test_frames_drawn_in_the_calling_thread_match_llvmpipes_thread_pool():
    """The package renders without llvmpipe's thread pool by default; the pixels must not change."""
    import os
    import subprocess
    import sys

    digests = {}
    for threads in ("0", "2"):
        done = subprocess.run([sys.executable, "-c", RENDER_FRAMES], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "MUJOCO_GL": "egl", "LP_NUM_THREADS": threads})
        assert done.returncode == 0, done.stderr[-2000:]
        seen, digest = done.stdout.split()
        assert seen == threads  # the package's default did not override what the caller set
        digests[threads] = digest
    assert digests["0"] == digests["2"]
