"""The sample lane keeps every worker busy: a half's action slab is applied as soon as it comes,
even while the other half is still stepping."""
from __future__ import annotations

import threading
import time
from multiprocessing.connection import wait as wait_for_ready

import numpy as np

from dvla_hpc.envs.registry import env_spec
from dvla_hpc.envs.vector import VectorEnv
from dvla_hpc.lanes.lane import SlotQueue
from dvla_hpc.lanes.sample import EpisodeBudget, GroupSchedule, SampleLane, group_seed
from dvla_hpc.memory.layouts import H, SlabKind, action_layout, observation_layout, stamp
from dvla_hpc.memory.slab_pool import SlabPool


def test_a_wakeable_queue_is_readable_exactly_while_a_put_is_unclaimed():
    q = SlotQueue(4, "actions", wakeable=True)
    assert not wait_for_ready([q.wake], timeout=0)
    assert q.put(3, threading.Event())
    assert wait_for_ready([q.wake], timeout=0)
    assert q.get_nowait() == 3
    assert not wait_for_ready([q.wake], timeout=0)
    assert q.get_nowait() is None
    assert q.put_nowait(5)  # a slot put after an empty get_nowait is never missed
    assert wait_for_ready([q.wake], timeout=0)
    assert q.get_nowait() == 5
    assert SlotQueue(2, "plain").wake is None


def serve_actions(spec, obs_pool, obs_q, action_pool, action_q, stop):
    """Stands in for the infer lane: answers every observation slab at once with zero actions."""
    while not stop.is_set():
        slot = obs_q.get(0.05)
        if slot is None:
            continue
        obs = obs_pool.slots[slot]
        out = action_pool.acquire(1.0)
        view = action_pool.slots[out]
        stamp(view["header"], SlabKind.ACTIONS)
        for word in (H.SAMPLER, H.HALF, H.COUNT):
            view["header"][word] = obs["header"][word]
        view["action"][:] = 0.0
        obs_pool.release(slot)
        action_q.put(out, stop)


def test_the_other_half_keeps_stepping_while_one_half_is_slow():
    # The first group's episodes (half A: envs 0 and 1) sleep 1 s in their first step. Each env
    # has its own worker, so half B's envs are free to step meanwhile, if the lane applies their
    # action slabs while it waits for half A.
    env_kwargs = {"image_size": 16, "fault": "slow", "fault_step": 1, "fault_seconds": 1.0,
                  "fault_seed": group_seed(0, 0, 0)}
    spec = env_spec("debug_faulty", **env_kwargs)
    obs_pool, obs_q = SlabPool(observation_layout(spec, 2), 3), SlotQueue(3, "observations")
    action_pool, action_q = SlabPool(action_layout(spec, 2), 3), SlotQueue(3, "actions", wakeable=True)
    stop, failed = threading.Event(), threading.Event()
    dispatched: list[tuple[float, tuple[int, ...]]] = []

    def make_env() -> VectorEnv:
        vec = VectorEnv("debug_faulty", env_kwargs, 4, 4)
        step_async = vec.step_async

        def recorded(ids, actions, reset_seeds):
            dispatched.append((time.monotonic(), tuple(int(i) for i in ids)))
            step_async(ids, actions, reset_seeds)
        vec.step_async = recorded
        return vec

    lane = SampleLane(0, make_env, 4, GroupSchedule(0, 0, 2), EpisodeBudget(None), obs_pool, obs_q,
                      action_pool, action_q, stop, failed)
    infer = threading.Thread(target=serve_actions, args=(spec, obs_pool, obs_q, action_pool, action_q, stop))
    lane.start()
    infer.start()
    deadline = time.monotonic() + 60
    while not any(ids == (0, 1) for _, ids in dispatched) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.9)
    stop.set()
    lane.join(30)
    infer.join(30)
    assert not failed.is_set(), lane.error_text
    slow_start = next(t for t, ids in dispatched if ids == (0, 1))
    half_b = [t for t, ids in dispatched if ids == (2, 3) and slow_start < t < slow_start + 0.8]
    assert len(half_b) >= 5, f"half B stepped {len(half_b)} times while half A's step slept"
    assert all(ids in ((0, 1), (2, 3)) for _, ids in dispatched)
    assert np.all(np.diff([t for t, _ in dispatched]) >= 0)
