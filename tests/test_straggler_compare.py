"""The straggler comparison's arithmetic: paces in env steps trained, pooled over runs by their
wall time (the real jobs run in tests/test_job_faults.py)."""
from __future__ import annotations

import pytest

from dvla_hpc.bench.straggler import compare_runs


def run(steps: dict[int, int], wall_seconds: float, groups: dict[int, int] | None = None,
        slow_rank: int | None = None) -> dict:
    return {"steps": steps, "wall_seconds": wall_seconds, "updates": 10, "slow_rank": slow_rank,
            "groups": groups or {rank: 1 for rank in steps}}


def test_pace_is_env_steps_not_groups():
    """A steady run that learned faster finished more (shorter) groups for the same env steps."""
    alone = [run({1: 300, 2: 300, 3: 300}, 10.0, groups={1: 30, 2: 30, 3: 30})]
    slowed = [run({1: 60, 2: 300, 3: 300}, 10.0, groups={1: 3, 2: 15, 3: 15}, slow_rank=1)]
    found = compare_runs(alone, slowed)
    assert found["slow_rank"] == 1 and found["others_kept"] == pytest.approx(1.0)
    assert found["others_steps_per_s"] == [60.0, 60.0] and found["straggler_steps_per_s"] == [30.0, 6.0]
    assert found["learner_could_keep"] == pytest.approx((60 + 6) / 90, abs=1e-3)
    assert found["learner_kept"] == pytest.approx(66 / 90, abs=1e-3)


def test_pooled_runs_weigh_by_their_wall_time():
    alone = [run({1: 100, 2: 100}, 10.0), run({1: 300, 2: 500}, 20.0)]
    slowed = [run({1: 10, 2: 90}, 10.0, slow_rank=1), run({1: 30, 2: 210}, 30.0, slow_rank=1)]
    found = compare_runs(alone, slowed)
    assert found["pairs"] == 2
    assert found["others_steps_per_s"] == [pytest.approx(600 / 30, abs=0.05), pytest.approx(300 / 40, abs=0.05)]
    assert found["others_kept"] == pytest.approx((300 / 40) / (600 / 30), abs=1e-3)
    assert not found["survived"]  # the others lost more than a tenth of their pace
