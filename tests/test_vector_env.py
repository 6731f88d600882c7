import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from dvla_hpc.envs.tabletop import TabletopReachEnv
from dvla_hpc.envs.vector import VectorEnv
from dvla_hpc.envs.vector_runner import MAX_CONSECUTIVE_FAULTS, EnvStepError
from dvla_hpc.envs.vector_worker import SIGTERM_GRACE_S
from dvla_hpc.lanes.lane import WakePipe

SMALL = {"image_size": 32}
FIELDS = ("image", "proprio", "task_index", "reward", "done", "success", "failed", "episode_step", "env_steps")


def snapshot(vec: VectorEnv) -> dict[str, np.ndarray]:
    return {name: getattr(vec, name).copy() for name in FIELDS}


def first_image(seed: int, **kwargs) -> np.ndarray:
    env = TabletopReachEnv(**{**SMALL, **kwargs})
    image = env.reset(seed).image
    env.close()
    return image


def test_workers_reproduce_the_inline_env_exactly():
    ids = np.arange(4)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1.5, 1.5, size=(30, 4, 2)).astype(np.float32)
    env_kwargs = {**SMALL, "max_episode_steps": 6}
    with VectorEnv("tabletop_reach", env_kwargs, 4, 0) as inline, \
            VectorEnv("tabletop_reach", env_kwargs, 4, 2) as workers:
        histories = []
        for vec in (inline, workers):
            vec.reset_async(ids, seeds=np.array([5, 6, 7, 8]))
            vec.wait(ids)
            history = [snapshot(vec)]
            for t in range(30):
                vec.step_async(ids, actions[t], reset_seeds=100 + 4 * t + ids)
                vec.wait(ids)
                history.append(snapshot(vec))
            histories.append(history)
    for inline_state, worker_state in zip(*histories):
        for name in FIELDS:
            np.testing.assert_array_equal(inline_state[name], worker_state[name], err_msg=name)
    assert any(state["done"].any() for state in histories[0])  # auto-reset was exercised
    assert not any(state["failed"].any() for state in histories[1])


def test_finished_episode_is_reset_with_its_reset_seed():
    with VectorEnv("tabletop_reach", {**SMALL, "max_episode_steps": 3}, 2, 1) as vec:
        ids = np.arange(2)
        vec.reset_async(ids, np.array([1, 2]))
        vec.wait()
        for step in range(1, 4):
            vec.step_async(ids, np.zeros((2, 2)), reset_seeds=np.array([41, 42]))
            vec.wait(ids)
            if step < 3:
                assert not vec.done.any() and list(vec.episode_step) == [step, step]
        assert vec.done.all() and not vec.success.any() and not vec.failed.any()
        assert list(vec.episode_step) == [0, 0]
        np.testing.assert_array_equal(vec.image[0], first_image(41))
        np.testing.assert_array_equal(vec.image[1], first_image(42))


def test_two_groups_in_flight_are_waited_for_separately():
    # env 3 sleeps 1.5 s on its first step; group A must not wait for it.
    kwargs = {**SMALL, "fault": "slow", "fault_seconds": 1.5, "fault_step": 1, "fault_seed": 13}
    with VectorEnv("debug_faulty", kwargs, 4, 2) as vec:
        group_a, group_b = np.array([0, 1]), np.array([2, 3])
        vec.reset_async(np.arange(4), np.array([10, 11, 12, 13]))
        vec.wait()
        vec.step_async(group_a, np.zeros((2, 2)), np.array([20, 21]))
        vec.step_async(group_b, np.zeros((2, 2)), np.array([22, 23]))
        with pytest.raises(ValueError, match="in flight"):
            vec.step_async(group_a, np.zeros((2, 2)), np.array([20, 21]))
        vec.wait(group_a)
        assert list(vec.episode_step[group_a]) == [1, 1]
        with pytest.raises(ValueError, match=r"envs \[(2, )?3\] are still in flight"):
            vec.step_async(group_b, np.zeros((2, 2)), np.array([22, 23]))
        vec.step_async(group_a, np.zeros((2, 2)), np.array([20, 21]))
        vec.wait(group_b)
        vec.wait(group_a)
        assert list(vec.episode_step) == [2, 2, 1, 1]
        assert vec.worker_restarts == 0


def test_a_wait_returns_early_when_its_wake_handle_turns_readable():
    kwargs = {**SMALL, "fault": "slow", "fault_seconds": 2.0, "fault_step": 1, "fault_seed": 10}
    wake = WakePipe()
    with VectorEnv("debug_faulty", kwargs, 2, 1) as vec:
        ids = np.arange(2)
        vec.reset_async(ids, np.array([10, 11]))
        assert vec.wait_any([ids], wake=wake) == 0
        vec.step_async(ids, np.zeros((2, 2)), np.array([20, 21]))
        threading.Timer(0.2, wake.notify).start()
        started = time.monotonic()
        assert vec.wait_any([ids], wake=wake) is None  # env 0 sleeps 2 s in this step
        assert time.monotonic() - started < 1.5
        wake.clear()
        assert vec.wait_any([ids], wake=wake) == 0
        assert list(vec.episode_step) == [1, 1]


def test_killed_worker_is_restarted_and_its_envs_come_back_failed(caplog):
    with VectorEnv("tabletop_reach", SMALL, 4, 2) as vec:
        ids = np.arange(4)
        vec.reset_async(ids, np.arange(4))
        vec.wait()
        vec.step_async(ids, np.zeros((4, 2)), np.full(4, 99))
        vec.wait()
        old_pid = vec.worker_pids()[0]
        os.kill(old_pid, signal.SIGKILL)
        vec.step_async(ids, np.zeros((4, 2)), reset_seeds=np.array([50, 51, 52, 53]))
        vec.wait(ids)
        assert list(vec.failed) == [True, False, True, False]
        assert list(vec.done) == [True, False, True, False]
        assert list(vec.episode_step) == [0, 2, 0, 2]
        assert vec.reward[0] == 0.0 and vec.reward[2] == 0.0 and not vec.success.any()
        np.testing.assert_array_equal(vec.image[0], first_image(50))
        np.testing.assert_array_equal(vec.image[2], first_image(52))
        assert vec.worker_restarts == 1 and vec.worker_pids()[0] != old_pid
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len(warnings) == 1 and "worker 0" in warnings[0] and "[0, 2]" in warnings[0]
        vec.step_async(ids, np.zeros((4, 2)), np.full(4, 99))
        vec.wait(ids)
        assert not vec.failed.any() and list(vec.episode_step) == [1, 3, 1, 3]

        # An env idle while its worker dies has lost its state: its next step reports failure.
        os.kill(vec.worker_pids()[1], signal.SIGKILL)
        vec.step_async(np.array([1]), np.zeros((1, 2)), np.array([71]))  # env 3 stays idle
        vec.wait()
        assert vec.failed[1] and not vec.failed[3] and vec.episode_step[3] == 3
        vec.step_async(np.array([3]), np.zeros((1, 2)), np.array([73]))
        vec.wait()
        assert vec.failed[3] and vec.done[3] and vec.episode_step[3] == 0
        np.testing.assert_array_equal(vec.image[3], first_image(73))
        assert vec.worker_restarts == 2




def test_worker_cpu_counts_the_workers_and_keeps_what_replaced_and_closed_ones_used():
    with VectorEnv("tabletop_reach", SMALL, 4, 0) as inline:
        inline.reset_async(np.arange(4), np.arange(4))
        inline.wait()
        assert inline.worker_cpu_seconds() == 0.0  # inline envs use the caller's own CPU
    with VectorEnv("tabletop_reach", SMALL, 4, 2) as vec:
        ids = np.arange(4)
        vec.reset_async(ids, np.arange(4))
        vec.wait()
        started = vec.worker_cpu_seconds()
        for _ in range(30):
            vec.step_async(ids, np.zeros((4, 2)), np.full(4, 99))
            vec.wait()
        stepped = vec.worker_cpu_seconds()
        assert stepped > started > 0
        os.kill(vec.worker_pids()[0], signal.SIGKILL)
        vec.step_async(ids, np.zeros((4, 2)), np.full(4, 99))
        vec.wait()
        assert vec.worker_restarts == 1 and vec.worker_cpu_seconds() > stepped
    closed = vec.worker_cpu_seconds()
    assert closed > stepped and vec.worker_cpu_seconds() == closed


def test_hung_worker_is_killed_after_the_timeout_and_replaced():
    kwargs = {**SMALL, "fault": "hang", "fault_step": 2, "fault_seed": 1}
    with VectorEnv("debug_faulty", kwargs, 4, 2, step_timeout_s=2.0) as vec:
        ids = np.arange(4)
        vec.reset_async(ids, np.arange(4))
        vec.wait()
        for _ in range(2):
            vec.step_async(ids, np.zeros((4, 2)), reset_seeds=np.array([30, 31, 32, 33]))
            vec.wait(ids)
        assert list(vec.failed) == [False, True, False, True]
        assert vec.done[1] and vec.done[3] and vec.worker_restarts == 1
        vec.step_async(ids, np.zeros((4, 2)), reset_seeds=np.array([30, 31, 32, 33]))
        vec.wait(ids)
        assert not vec.failed.any() and vec.worker_restarts == 1


def test_worker_that_crashes_again_while_recovering_gives_up():
    kwargs = {**SMALL, "fault": "crash", "fault_step": 0, "fault_seed": 5}  # crashes whenever seed 5 resets
    with VectorEnv("debug_faulty", kwargs, 2, 1) as vec:
        vec.reset_async(np.arange(2), np.array([4, 5]))
        with pytest.raises(RuntimeError, match="again while recovering envs"):
            vec.wait()


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("fault", ["raise", "nan", "shape"])
def test_a_faulty_step_loses_only_its_episode(num_workers, fault):
    kwargs = {**SMALL, "fault": fault, "fault_step": 1, "fault_seed": 22}
    with VectorEnv("debug_faulty", kwargs, 4, num_workers) as vec:
        vec.reset_async(np.arange(4), np.array([20, 21, 22, 23]))
        vec.wait()
        vec.step_async(np.arange(4), np.zeros((4, 2)), np.array([30, 31, 32, 33]))
        vec.wait()
        assert vec.failed.tolist() == [False, False, True, False]
        assert vec.done[2] and vec.episode_step[2] == 0  # reset with seed 32: a fresh episode
        assert np.isfinite(vec.proprio).all()
        vec.step_async(np.arange(4), np.zeros((4, 2)), np.zeros(4, np.int64))
        vec.wait()
        assert not vec.failed.any() and vec.worker_restarts == 0


@pytest.mark.parametrize("num_workers", [0, 2])
def test_an_env_whose_episodes_keep_faulting_surfaces_naming_it(num_workers):
    kwargs = {**SMALL, "fault": "raise", "fault_step": 1, "fault_seed": None}
    with VectorEnv("debug_faulty", kwargs, 2, num_workers) as vec:
        vec.reset_async(np.arange(2), np.array([20, 21]))
        vec.wait()
        with pytest.raises(EnvStepError, match=r"env (\d) \((worker \1|inline)\) raised: FaultInjected") as info:
            for _ in range(MAX_CONSECUTIVE_FAULTS):
                vec.step_async(np.arange(2), np.zeros((2, 2)), np.arange(2))
                vec.wait()
        # both envs break on the same step; with workers, whichever reports first is the one named
        assert f"env {info.value.env_id} " in str(info.value) and vec.worker_restarts == 0
        assert info.value.env_id == 0 or num_workers == 2


def test_the_shared_block_is_anonymous_and_close_releases_it_and_stops_workers():
    vec = VectorEnv("tabletop_reach", SMALL, 2, 2)
    path, pids = vec.shared_block_path, vec.worker_pids()
    assert os.readlink(path).startswith("/memfd:")  # never named in /dev/shm: nothing to leak
    view = vec.image  # a caller still holding a view must not stop close()
    vec.close()
    vec.close()
    assert vec.shared_block_path is None
    with pytest.raises(FileNotFoundError):
        open(path, "rb")
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    with pytest.raises(RuntimeError, match="closed"):
        vec.step_async(np.arange(2), np.zeros((2, 2)), np.zeros(2, np.int64))
    view[0, 0, 0, 0, 0] = 7  # still mapped, just closed to new workers
    assert view[0, 0, 0, 0, 0] == 7


def test_workers_outlast_a_sigterm_for_the_grace_then_leave_unless_stopped_first():
    """SLURM sends its SIGTERM to every process of a step; the rank, not the signal, stops workers."""
    with VectorEnv("tabletop_reach", SMALL, 2, 2) as vec:
        ids = np.arange(2)
        vec.reset_async(ids, ids)
        vec.wait()
        pids = vec.worker_pids()
        for _ in range(2):  # slurmstepd's, then the one srun passes on
            for pid in pids:
                os.kill(pid, signal.SIGTERM)
        signalled = time.monotonic()
        for _ in range(5):
            vec.step_async(ids, np.zeros((2, 2)), np.array([90, 91]))
            vec.wait(ids)
        assert vec.worker_restarts == 0 and not vec.failed.any() and vec.worker_pids() == pids
        while any(_state(pid) not in ("Z", "gone") for pid in pids):
            assert time.monotonic() - signalled < SIGTERM_GRACE_S + 10, "SIGTERM'd workers never left"
            time.sleep(0.2)
        assert time.monotonic() - signalled > SIGTERM_GRACE_S - 1
        vec.step_async(ids, np.zeros((2, 2)), np.array([90, 91]))
        vec.wait(ids)
        assert vec.worker_restarts == 2 and vec.failed.all()


def test_workers_of_a_killed_parent_exit():
    parent = subprocess.Popen(
        [sys.executable, "-c", "import time\n"
         "from dvla_hpc.envs.vector import VectorEnv\n"
         f"vec = VectorEnv('tabletop_reach', {SMALL!r}, 2, 2)\n"
         "print(*vec.worker_pids(), flush=True)\n"
         "time.sleep(300)\n"], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(pids) == 2
    finally:
        parent.kill()  # as MPI_Abort or the OOM killer would: close() never runs
        parent.wait()
    deadline = time.monotonic() + 30
    while pids and time.monotonic() < deadline:
        pids = [pid for pid in pids if os.path.exists(f"/proc/{pid}") and _state(pid) != "Z"]
        time.sleep(0.1)
    assert not pids, f"workers {pids} outlived their killed parent"


def _state(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_workers_run_at_the_niceness_asked_for_and_a_restarted_one_too():
    with VectorEnv("tabletop_reach", SMALL, 2, 2, worker_nice=7) as vec:
        assert [os.getpriority(os.PRIO_PROCESS, pid) for pid in vec.worker_pids()] == [os.nice(0) + 7] * 2
        os.kill(vec.worker_pids()[0], signal.SIGKILL)
        vec.reset_async(np.arange(2), np.arange(2))
        vec.wait()
        assert vec.worker_restarts == 1
        assert [os.getpriority(os.PRIO_PROCESS, pid) for pid in vec.worker_pids()] == [os.nice(0) + 7] * 2
    with pytest.raises(ValueError, match="worker_nice"):
        VectorEnv("tabletop_reach", SMALL, 2, 1, worker_nice=20)


def test_inline_buffers_are_plain_arrays_with_the_spec_shapes():
    with VectorEnv("tabletop_reach", SMALL, 3, 0) as vec:
        assert vec.shared_block_path is None and vec.worker_pids() == []
        assert vec.image.shape == (3, 1, 32, 32, 3) and vec.image.dtype == np.uint8
        assert vec.proprio.shape == (3, vec.spec.proprio_dim) and vec.proprio.dtype == np.float32
        vec.reset_async(np.array([2]), np.array([9]))
        np.testing.assert_array_equal(vec.image[2], first_image(9))
        assert not vec.image[0].any()


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="known env names"):
        VectorEnv("nope", {}, 2, 0)
    with pytest.raises(ValueError, match="JSON"):
        VectorEnv("tabletop_reach", {"image_size": np.int64(32)}, 2, 0)
    with pytest.raises(ValueError, match="num_workers"):
        VectorEnv("tabletop_reach", SMALL, 2, 3)
    with VectorEnv("tabletop_reach", SMALL, 2, 0) as vec:
        with pytest.raises(ValueError, match="actions must have shape"):
            vec.step_async(np.arange(2), np.zeros((2, 3)), np.zeros(2, np.int64))
        with pytest.raises(ValueError, match="must not repeat"):
            vec.reset_async(np.array([1, 1]), np.zeros(2, np.int64))
        with pytest.raises(ValueError, match=r"\[0, 2\)"):
            vec.reset_async(np.array([2]), np.zeros(1, np.int64))
        with pytest.raises(ValueError, match="seeds must be non-negative"):
            vec.reset_async(np.array([0]), np.array([-3]))
