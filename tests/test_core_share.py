"""A rank's data pump polls eagerly only where its host has a core for every process of the job."""
from __future__ import annotations

import pytest

from dvla_hpc.config.loader import load_config
from dvla_hpc.planes.backoff import FIRST_SLEEP_S
from dvla_hpc.runtime.core_share import pump_first_sleep_s, shares_cores
from dvla_hpc.runtime.topology import plan_layout


def four_ranks(node_of=(0, 0, 0, 0)):
    return plan_layout(4, learn_ranks=1, infer_ranks=1, node_of=list(node_of), switch_of=[0] * 4)


def test_the_jobs_processes_on_a_host_count_each_sims_env_workers():
    plan = four_ranks()  # 2 sims with 2 workers each, 1 infer, 1 learner: 8 processes
    sim = plan.ranks("sim")[0]
    assert shares_cores(plan, sim, workers_per_sampler=2, host_cpus=7, rank_cpus=7)
    assert not shares_cores(plan, sim, workers_per_sampler=2, host_cpus=8, rank_cpus=8)
    assert not shares_cores(plan, sim, workers_per_sampler=0, host_cpus=4, rank_cpus=4)


def test_only_the_ranks_on_the_same_host_count():
    plan = plan_layout(4, learn_ranks=1, infer_ranks=1, node_of=[0, 0, 1, 1], switch_of=[0] * 4)
    for rank in range(4):
        on_host = sum(1 + 2 * (plan.roles[r] == "sim") for r in range(4) if plan.node_of[r] == plan.node_of[rank])
        assert shares_cores(plan, rank, 2, host_cpus=on_host - 1, rank_cpus=64)
        assert not shares_cores(plan, rank, 2, host_cpus=on_host, rank_cpus=64)


def test_a_rank_pinned_to_fewer_cpus_than_its_own_processes_shares_them():
    plan = four_ranks()
    sim, infer = plan.ranks("sim")[0], plan.ranks("infer")[0]
    assert shares_cores(plan, sim, 2, host_cpus=64, rank_cpus=2)  # the rank and two workers on 2 CPUs
    assert not shares_cores(plan, sim, 2, host_cpus=64, rank_cpus=3)
    assert not shares_cores(plan, infer, 2, host_cpus=64, rank_cpus=1)


def test_the_first_sleep_is_the_configured_one_or_follows_the_cores(monkeypatch):
    plan = four_ranks()
    cfg = load_config(None, ["pipeline.poll_min_sleep_ms=0.5"])
    assert pump_first_sleep_s(cfg, plan, 0) == pytest.approx(0.5e-3)
    cfg = load_config(None, ["pipeline.poll_max_sleep_ms=3"])
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    assert pump_first_sleep_s(cfg, plan, 0) == pytest.approx(3e-3)
    monkeypatch.setattr("os.cpu_count", lambda: 64)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(64)))
    assert pump_first_sleep_s(cfg, plan, 0) == FIRST_SLEEP_S
