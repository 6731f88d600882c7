"""Sync mode: rounds of one update's episodes, each rolled out by the weights the round before trained."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dvla_hpc.lanes.sample import EpisodeBudget
from dvla_hpc.output.metrics_log import read_metrics
from dvla_hpc.output.trajectory_reader import iter_episodes
from test_end_to_end import check_run_directory, command, run

pytestmark = pytest.mark.slow


def test_episode_budget_counts_one_round_and_async_is_unlimited():
    budget = EpisodeBudget(3)
    budget.new_round()
    assert [budget.take() for _ in range(5)] == [True, True, True, False, False]
    budget.new_round()
    assert budget.take()
    unlimited = EpisodeBudget(None)
    unlimited.new_round()
    assert all(unlimited.take() for _ in range(1000)) and not unlimited.sync
    with pytest.raises(ValueError, match="at least one episode"):
        EpisodeBudget(0)


def check_on_policy(out, summary: dict, episodes_per_update: int) -> None:
    assert summary["mode"] == "sync"
    assert summary["policy_lag_mean"] == 0 and summary["samples_dropped_stale"] == 0
    updates = [m for m in read_metrics(out / "metrics.jsonl") if m["kind"] == "update"]
    assert len(updates) >= 3
    for update in updates:
        assert update["lag_mean"] == 0
    # every update trains exactly one round: the episodes admitted between updates
    episodes = [u["episodes"] for u in updates]
    assert np.diff(episodes).tolist() == [episodes_per_update] * (len(episodes) - 1)
    for ep in iter_episodes(out / "trajectories"):
        assert len(set(ep.policy_versions.tolist())) == 1, "an episode spans two policy versions"


def test_single_process_sync_run_is_on_policy(tmp_path):
    done = run(command(tmp_path / "run", 1, "run.mode=sync"))
    assert done.returncode == 0, done.stderr[-3000:]
    summary = check_run_directory(tmp_path / "run", 700)
    check_on_policy(tmp_path / "run", summary, episodes_per_update=4)


@pytest.mark.mpi
def test_mpi_sync_run_splits_rounds_over_sim_ranks(tmp_path):
    done = run(command(tmp_path / "run", 4, "run.mode=sync", "env.workers_per_sampler=0"))
    assert done.returncode == 0, done.stderr[-3000:]
    summary = check_run_directory(tmp_path / "run", 700)
    check_on_policy(tmp_path / "run", summary, episodes_per_update=4)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["world_size"] == 4


def test_sync_mode_refuses_publishing_less_often_than_every_update(tmp_path):
    done = run(command(tmp_path / "run", 1, "run.mode=sync", "learn.publish_every=2"), timeout=60)
    assert done.returncode == 2
    assert "learn.publish_every" in done.stderr and "sync" in done.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.mpi
def test_sync_mode_needs_groups_that_split_evenly_over_sim_ranks(tmp_path):
    done = run(command(tmp_path / "run", 4, "run.mode=sync", "learn.groups_per_update=3"), timeout=60)
    assert done.returncode == 2
    assert "learn.groups_per_update" in done.stderr and "2 sim ranks" in done.stderr
