"""A job survives what clusters do to it: hung and dead ranks end it in time with a message that
names them, every file it wrote stays readable, and `--resume DIR` continues it."""
from __future__ import annotations

import json
import signal

import pytest

from dvla_hpc.bench import job_faults

pytestmark = [pytest.mark.mpi, pytest.mark.slow]
TIMEOUT_S = 6.0


@pytest.mark.parametrize("role", ["sim", "infer", "learn"])
def test_a_hung_rank_ends_the_job_naming_it(tmp_path, role):
    found = job_faults.signal_rank(tmp_path / "run", 3, role, signal.SIGSTOP, TIMEOUT_S, TIMEOUT_S + 5)
    assert found["ended_after_s"] is not None and found["ended_after_s"] <= TIMEOUT_S + 5, found
    assert found["exit_code"] != 0
    assert found["named"] and "on host" in found["message"], found
    assert "Traceback" not in found["message"]
    assert found["episodes_readable"] > 0


@pytest.mark.parametrize("role", ["sim", "infer", "learn"])
def test_a_killed_rank_ends_the_job_and_its_run_resumes(tmp_path, role):
    out = tmp_path / "run"
    found = job_faults.signal_rank(out, 3, role, signal.SIGKILL, 60, 10)
    assert found["ended_after_s"] is not None and found["ended_after_s"] <= 10, found
    target = found["checkpoint_env_steps"] + 300
    resumed = job_faults.launch(out, 3, f"run.total_env_steps={target}", resume=True)
    assert resumed.wait(240) is not None and resumed.proc.returncode == 0, resumed.output()[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env_steps"] >= target and summary["policy_version"] > found["checkpoint_version"]


@pytest.mark.parametrize("ranks", [1, 3])
def test_whole_job_killed_at_random_moments_resumes_every_time(tmp_path, ranks):
    out = tmp_path / "run"
    legs = job_faults.kill_and_resume(out, ranks, kills=3, seed=ranks)
    assert [leg["ended"] for leg in legs] == ["killed"] * 3 + ["finished"], legs[-1].get("output")
    versions = [leg["checkpoint_version"] for leg in legs]
    steps = [leg["checkpoint_env_steps"] for leg in legs]
    assert versions == sorted(versions) and steps == sorted(steps)
    summary = json.loads((out / "summary.json").read_text())  # the resumed directory's own summary
    assert summary["env_steps"] >= steps[-2] + 600
    assert summary["policy_version"] > versions[-2]
    assert all(leg["episodes"] > 0 for leg in legs)


@pytest.mark.parametrize("kind", ["crash", "raise", "nan", "shape", "slow"])
def test_env_faults_lose_only_their_episodes(tmp_path, kind):
    from dvla_hpc.bench.env_faults import env_fault_run
    found = env_fault_run(tmp_path / "run", kind, rate=0.3, env_steps=500, timeout_s=240)
    assert found["exit_code"] == 0, found.get("error")
    if kind == "slow":  # a stall loses nothing: its episodes are recorded, and counted by their seeds
        assert found["failed_episodes"] == 0 and found["recorded_faulted"] > 0
    else:  # a faulted episode is lost, never recorded
        assert 0 < found["failed_episodes"] < found["episodes"] and found["recorded_faulted"] == 0
    assert found["recorded"] > 0 and found["corrupted"] == 0 and found["survived"]
    if kind == "crash":
        assert found["worker_restarts"] > 0


def test_a_straggling_sim_rank_does_not_slow_the_others(tmp_path):
    from dvla_hpc.bench.straggler import straggler_compare

    def kept_pace(found: dict) -> bool:  # the others kept theirs, the learner trained what arrived
        return found["others_kept"] >= 0.9 and found["learner_kept"] >= 0.9 * found["learner_could_keep"]

    found = straggler_compare(tmp_path / "first", ranks=6, seconds=25, running_share=0.1)
    if not kept_pace(found):  # one pair of runs on 2 cores drifts by a tenth: pool a second
        found = straggler_compare(tmp_path / "second", ranks=6, seconds=25, running_share=0.1, earlier=found)
    for run in found["straggler"]:
        steps = run["steps"]
        assert steps[run["slow_rank"]] < min(n for rank, n in steps.items() if rank != run["slow_rank"])
    assert kept_pace(found), found
