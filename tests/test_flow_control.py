"""Async flow control: samplers start no more groups than the learner root grants, the grants keep
the untrained groups within the budget, a straggler holding groups does not hold the others back,
and a sampler never leaves a started group incomplete."""
from __future__ import annotations

import time

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dvla_hpc.config.schema import Config
from dvla_hpc.lanes.flow_credit import FlowCredit
from dvla_hpc.lanes.sample import GROUP_KEY_STRIDE, FlowControl, learner_for_group
from dvla_hpc.memory.layouts import H, PARKED, SlabKind, stamp
from dvla_hpc.runtime import assembly
from dvla_hpc.runtime.blueprint import Blueprint


def test_a_sampler_may_start_what_it_was_granted_and_grants_only_grow():
    flow = FlowControl()
    assert not flow.allows(1)  # nothing before the root's first grant
    flow.observe(3)
    assert flow.allows(3) and not flow.allows(4)
    flow.observe(2)  # a late, smaller grant changes nothing
    assert flow.allows(3)


def credit_for(samplers: int, groups: int, learners: int, ahead: int) -> FlowCredit:
    return FlowCredit(list(range(1, samplers + 1)), groups, learners, ahead)  # sampler ids: sim ranks


def test_more_samplers_than_groups_per_update_take_turns():
    """60 samplers, 8 groups an update, 1 ahead: 9 groups may be untrained, not one per sampler."""
    credit = credit_for(60, 8, 1, 1)
    assert credit.budget == 9 and credit.granted.sum() == 9 and credit.granted.max() == 1
    first = credit.granted.copy()
    credit.update(first)  # every granted group trained: the next 9 go to samplers that had none
    assert credit.held().sum() == 9 and not (credit.held() * first).any()


def test_the_root_tells_only_the_samplers_whose_grant_grew():
    """Its control traffic grows with the groups trained, not with the number of sim ranks."""
    credit = credit_for(60, 8, 1, 1)
    first = credit.news()
    assert len(first) == 60 and sum(g for _, g in first) == 9  # everyone hears once, at the start
    assert credit.news() == []
    trained = np.zeros(60, dtype=np.int64)
    for update in range(20):
        held = np.flatnonzero(credit.held())[:8]
        trained[held] += 1
        credit.update(trained)
        news = credit.news()
        assert 0 < len(news) <= 8
        assert all(credit.granted[sampler - 1] == granted for sampler, granted in news)


def test_one_process_keeps_the_plain_window():
    assert credit_for(1, 8, 1, 2).budget == 16


def test_many_learners_each_hold_their_share_without_a_spare_per_sampler():
    """512 ranks: 392 samplers, 64 learners, 3,136 groups an update (49 per learner), 2 ahead."""
    credit = credit_for(392, 3136, 64, 2)
    assert credit.budget == 2 * 3136 + 63  # not + 63 x 392 spare groups
    assert credit.held_by_learner().min() >= 2 * 3136 // 64


def test_a_straggler_keeps_what_it_holds_and_the_others_take_the_rest():
    credit = credit_for(4, 8, 1, 1)
    trained = np.zeros(4, dtype=np.int64)
    for update in range(50):  # sampler 3 never delivers; every update trains 8 of the others' groups
        for k in range(8):
            fast = (update * 8 + k) % 3
            assert credit.held()[fast] > 0
            trained[fast] += 1
            credit.update(trained)
    assert credit.held()[3] == credit.granted[3] <= 3  # what it was granted at the start, no more
    assert (trained[:3] >= 120).all()  # 50 updates went on without it
    assert credit.held()[:3].sum() >= 8  # the others always hold a whole update's worth


def test_the_slack_is_only_what_one_straggler_needs():
    assert credit_for(2, 8, 1, 2).budget == 17  # window + 1
    assert credit_for(4, 2, 1, 2).budget == 4  # no slack needed


@settings(max_examples=150, deadline=None)
@given(samplers=st.integers(1, 40), learners=st.integers(1, 6), per_learner=st.integers(1, 6),
       ahead=st.integers(1, 3), straggler=st.booleans(), updates=st.integers(1, 30))
def test_learners_always_find_their_groups_and_the_budget_holds(samplers, learners, per_learner, ahead,
                                                                straggler, updates):
    """Fast samplers start every group they are granted at once; each update every learner trains
    its share from the complete groups sent to it (`learner_for_group`). None ever lacks one, even
    when one sampler straggles (never completes a group), and untrained groups stay in the budget."""
    groups = per_learner * learners
    ids = list(range(1, samplers + 1))
    credit = FlowCredit(ids, groups, learners, ahead)
    slow = 0 if straggler and samplers > 1 else None
    started = np.zeros(samplers, dtype=np.int64)
    trained = np.zeros(samplers, dtype=np.int64)
    complete: list[list[int]] = [[] for _ in range(learners)]
    for _ in range(updates):
        for s in range(samplers):
            while started[s] < credit.granted[s]:
                group = ids[s] * GROUP_KEY_STRIDE + int(started[s])
                if s != slow:
                    complete[learner_for_group(group, learners)].append(s)
                started[s] += 1
        assert credit.held().sum() <= credit.budget
        for learner in range(learners):
            assert len(complete[learner]) >= per_learner, (learner, credit.held_by_learner())
            for s in complete[learner][:per_learner]:
                trained[s] += 1
            del complete[learner][:per_learner]
        credit.update(trained)


def small_config() -> Config:
    cfg = Config()
    cfg.env.image_size, cfg.model.patch_size = 16, 8
    cfg.env.envs_per_sampler, cfg.env.workers_per_sampler, cfg.env.max_episode_steps = 4, 0, 3
    cfg.learn.group_size, cfg.learn.groups_per_update = 2, 1
    cfg.pipeline.flow_versions_ahead = 1
    return cfg


def serve(ports, seen: dict, until: float, on_slab=None) -> None:
    """Stand in for the infer lane: answer every observation slab, note each row's group (and
    call `on_slab` for each slab)."""
    while time.monotonic() < until:
        slot = ports.obs_out.get(0.05)
        if slot is None:
            continue
        if on_slab is not None:
            on_slab()
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


def start_sampler(cfg: Config, sampler: int, granted: int):
    """A sample lane under flow control, `granted` groups granted, started: (ports, flow, signals, lane)."""
    bp = Blueprint.from_config(cfg)
    ports = assembly.sim_ports(bp)
    flow = assembly.flow_control(bp)
    flow.observe(granted)
    sig = assembly.Signals.new()
    [lane] = assembly.sim_lanes(bp, sampler, 1, ports, sig, flow)
    lane.start()
    return ports, flow, sig, lane


def stop_sampler(sig, lane) -> None:
    sig.stop.set()
    lane.join(10)
    assert lane.error is None, lane.error_text


def test_a_sampler_waits_for_grants_and_completes_every_group_it_starts():
    ports, flow, sig, lane = start_sampler(small_config(), sampler=5, granted=1)
    seen: dict[int, set] = {}
    try:
        serve(ports, seen, time.monotonic() + 3.0)
        assert lane.schedule.groups_started == 1  # one group of 2 granted
        assert lane.parked_halves >= 1 and lane.env_steps > 0
        flow.observe(3)
        serve(ports, seen, time.monotonic() + 3.0)
        assert lane.schedule.groups_started == 3
    finally:
        stop_sampler(sig, lane)
    assert sorted(g - 5 * GROUP_KEY_STRIDE for g in seen) == [0, 1, 2]
    assert all(len(envs) == 2 for envs in seen.values())  # every started group got both members
    assert len(set(np.concatenate([list(e) for e in seen.values()]))) >= 2


def test_envs_parked_beside_a_stepping_env_rejoin_once_flow_control_allows():
    """A grant that trickles in, one group at a time: an env that parked while others of its half
    kept stepping must take its turn again, not stay parked for the rest of the run."""
    cfg = small_config()
    cfg.env.envs_per_sampler, cfg.learn.group_size = 8, 1
    ports, flow, sig, lane = start_sampler(cfg, sampler=0, granted=3)
    try:
        def trickle() -> None:  # one more group than the lane has started: a spare, never more
            flow.observe(lane.schedule.groups_started + 1)
        serve(ports, {}, time.monotonic() + 2.0, on_slab=trickle)
        late: dict[int, set] = {}
        serve(ports, late, time.monotonic() + 2.0, on_slab=trickle)
    finally:
        stop_sampler(sig, lane)
    running = set().union(*late.values())
    assert running == set(range(8)), f"envs {sorted(set(range(8)) - running)} stayed parked"
