"""Async flow control: samplers start no more groups than the learners can train fresh, resume
when a newer version is announced, and never leave a started group incomplete."""
from __future__ import annotations

import time

import numpy as np

from dvla_hpc.config.schema import Config
from dvla_hpc.lanes.sample import GROUP_KEY_STRIDE, FlowControl
from dvla_hpc.memory.layouts import H, PARKED, SlabKind, stamp
from dvla_hpc.runtime import assembly
from dvla_hpc.runtime.blueprint import Blueprint


def test_credit_is_the_version_window_share_plus_one_spare_group_per_extra_learner():
    flow = FlowControl(groups_per_update=8, samplers=3, learners=2, ahead=2)
    assert flow.allows(7) and not flow.allows(8)  # ceil(2 * 8 / 3) = 6, + 1 spare
    flow.observe(1)
    assert flow.allows(9) and not flow.allows(10)  # ceil(3 * 8 / 3) = 8, + 1
    flow.observe(0)  # versions only move forward
    assert flow.allows(9)


def small_config() -> Config:
    cfg = Config()
    cfg.env.image_size, cfg.model.patch_size = 16, 8
    cfg.env.envs_per_sampler, cfg.env.workers_per_sampler, cfg.env.max_episode_steps = 4, 0, 3
    cfg.learn.group_size, cfg.learn.groups_per_update = 2, 1
    cfg.pipeline.flow_versions_ahead = 1
    return cfg


def serve(ports, seen: dict, until: float) -> None:
    """Stand in for the infer lane: answer every observation slab, note each row's group."""
    while time.monotonic() < until:
        slot = ports.obs_out.get(0.05)
        if slot is None:
            continue
        obs = ports.obs_pool.slots[slot]
        n = int(obs["header"][H.COUNT])
        for j in range(n):
            if obs["group"][j] != PARKED:
                seen.setdefault(int(obs["group"][j]), set()).add(int(obs["env_ids"][j]))
        out = ports.action_pool.acquire(1.0)
        view = ports.action_pool.slots[out]
        stamp(view["header"], SlabKind.ACTIONS)
        view["header"][H.HALF], view["header"][H.COUNT] = obs["header"][H.HALF], n
        view["action"][:n] = 0.0
        ports.obs_pool.release(slot)
        ports.action_in.put(out, assembly.Signals.new().stop)


def test_a_sampler_waits_for_versions_and_completes_every_group_it_starts():
    bp = Blueprint.from_config(small_config())
    ports = assembly.sim_ports(bp)
    flow = assembly.flow_control(bp, samplers=1, learners=1)
    sig = assembly.Signals.new()
    [lane] = assembly.sim_lanes(bp, 5, 1, ports, sig, flow)
    lane.start()
    seen: dict[int, set] = {}
    try:
        serve(ports, seen, time.monotonic() + 3.0)
        assert lane.schedule.groups_started == 1  # version 0, one update ahead: one group of 2
        assert lane.parked_halves >= 1 and lane.env_steps > 0
        flow.observe(2)
        serve(ports, seen, time.monotonic() + 3.0)
        assert lane.schedule.groups_started == 3
    finally:
        sig.stop.set()
        lane.join(10)
    assert lane.error is None, lane.error_text
    assert sorted(g - 5 * GROUP_KEY_STRIDE for g in seen) == [0, 1, 2]
    assert all(len(envs) == 2 for envs in seen.values())  # every started group got both members
    assert len(set(np.concatenate([list(e) for e in seen.values()]))) >= 2


def test_more_samplers_than_groups_per_update_take_turns():
    """60 samplers, 8 groups an update, 2 ahead: 16 groups may be in flight, not one per sampler."""
    flows = [FlowControl(groups_per_update=8, samplers=60, learners=1, ahead=2, sampler=s) for s in range(60)]
    assert sum(flow.allows(1) for flow in flows) == 16
    assert not any(flow.allows(2) for flow in flows)
    for flow in flows:
        flow.observe(6)  # 64 groups: every sampler its first, the first four their second
    assert all(flow.allows(1) for flow in flows)
    assert [s for s, flow in enumerate(flows) if flow.allows(2)] == [0, 1, 2, 3]


def test_every_learner_can_get_a_group_from_every_sampler():
    flows = [FlowControl(groups_per_update=2, samplers=10, learners=3, ahead=1, sampler=s) for s in range(10)]
    assert all(flow.allows(2) for flow in flows)  # the spares: a sampler's groups 1..learners-1
