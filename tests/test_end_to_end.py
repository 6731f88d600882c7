"""Whole runs of `python -m dvla_hpc.main`: one process and real MPI jobs, each under a timeout."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest

from dvla_hpc.envs.tabletop import INSTRUCTIONS
from dvla_hpc.output.checkpoint import latest_checkpoint, load_checkpoint
from dvla_hpc.output.metrics_log import read_metrics
from dvla_hpc.output.trajectory_reader import iter_episodes, trajectory_files

REPO = Path(__file__).resolve().parents[1]
MPIEXEC = Path(sys.executable).parent / "mpiexec"
SMALL = ["run.total_env_steps=700", "env.envs_per_sampler=4", "learn.group_size=2",
         "learn.groups_per_update=2", "run.progress_bar=false", "output.record_every=1",
         "output.episodes_per_shard=8", "run.metrics_every_s=0.5"]
SUMMARY_KEYS = ("env_steps", "wall_seconds", "env_steps_per_second", "episodes", "success_rate_first",
                "success_rate_last", "policy_lag_mean", "lanes")

pytestmark = pytest.mark.slow


def command(out: Path, ranks: int = 1, *extra: str) -> list[str]:
    prefix = [str(MPIEXEC), "-n", str(ranks)] if ranks > 1 else []
    return [*prefix, sys.executable, "-m", "dvla_hpc.main", "--out", str(out), *SMALL, *extra]


def run(cmd: list[str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PMI_", "PMIX_"))}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def check_run_directory(out: Path, min_steps: int) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    for key in SUMMARY_KEYS:
        assert key in summary, key
    assert summary["env_steps"] >= min_steps
    groups, steps = (sum(summary[f"{tally}_trained_by_sampler"].values()) for tally in ("groups", "env_steps"))
    assert groups == 2 * (summary["updates"] + summary["updates_without_samples"])  # 2 groups an update
    assert 2 * groups <= steps <= summary["env_steps"]  # 2 episodes a group, each at least a step
    assert {"sample", "infer", "learn", "distribute"} <= set(summary["lanes"])
    for shares in summary["lanes"].values():
        assert 0.0 <= shares["busy"] <= 1.0 and abs(shares["busy"] + shares["waiting"] - 1.0) < 0.01
    episodes = list(iter_episodes(out / "trajectories"))
    assert episodes, "no trajectories were written"
    final_version = summary["policy_version"]
    for ep in episodes:
        assert ep.instruction in INSTRUCTIONS
        assert ep.images.shape[1:] == (1, 64, 64, 3)
        assert ep.dones[-1] and not ep.dones[:-1].any()
        versions = ep.policy_versions
        assert (versions[1:] >= versions[:-1]).all() and versions.max() <= final_version
    for path in trajectory_files(out / "trajectories"):
        with h5py.File(path, "r") as f:
            demo = f["data"][sorted(f["data"].keys())[0]]
            assert {"task", "instruction", "success"} <= set(demo.attrs)
    ckpt = load_checkpoint(latest_checkpoint(out / "checkpoints"))
    assert ckpt.counters["version"] == final_version
    updates = [m for m in read_metrics(out / "metrics.jsonl") if m["kind"] == "update"]
    assert len(updates) == summary["updates"] > 0
    lanes = [m for m in read_metrics(out / "metrics.jsonl") if m["kind"] == "lanes"]
    assert lanes and all(0.0 <= m["host_cpu_busy_percent"] <= 100.0 for m in lanes)
    return summary


def test_single_process_run_writes_every_output(tmp_path):
    done = run(command(tmp_path / "run"))
    assert done.returncode == 0, done.stderr[-3000:]
    summary = check_run_directory(tmp_path / "run", 700)
    assert summary["world_size"] == 1
    assert "env_steps_per_second" in done.stdout  # the summary table
    last = [m for m in read_metrics(tmp_path / "run" / "metrics.jsonl") if m["kind"] == "lanes"][-1]
    assert last["ranks"]["0"]["role"] == "local"
    assert 0 < last["ranks"]["0"]["lanes_cpu_seconds"] <= last["ranks"]["0"]["cpu_seconds"] + 0.05


@pytest.mark.mpi
def test_mpi_run_with_every_role(tmp_path):
    done = run(command(tmp_path / "run", 4, "env.workers_per_sampler=0"))
    assert done.returncode == 0, done.stderr[-3000:]
    summary = check_run_directory(tmp_path / "run", 700)
    assert summary["world_size"] == 4
    assert summary["lanes"]["sample"]["ranks"] == 2
    assert summary["weight_swaps"] > 0  # versions came down the tree and were swapped in
    shared = 4 > os.cpu_count()  # 4 ranks on this host, their envs stepped inline
    assert summary["data_plane"]["pump_first_sleep_ms"] == (2.0 if shared else 0.05)
    last = [m for m in read_metrics(tmp_path / "run" / "metrics.jsonl") if m["kind"] == "lanes"][-1]
    statuses = last["ranks"].values()  # the root's own, the others' from their heartbeats
    assert sorted(s["role"] for s in statuses) == ["infer", "learn", "sim", "sim"]
    for status in statuses:  # running totals: the lanes' CPU is part of the process's
        assert 0 < status["lanes_cpu_seconds"] <= status["cpu_seconds"] + 0.05 and status["seconds"] > 0


@pytest.mark.mpi
def test_too_few_ranks_is_refused_up_front(tmp_path):
    began = time.monotonic()
    done = run(command(tmp_path / "run", 2), timeout=60)
    assert done.returncode == 2
    assert "2 ranks cannot host the 3 roles" in done.stderr
    assert time.monotonic() - began < 30


@pytest.mark.mpi
def test_an_error_on_one_rank_ends_the_whole_job(tmp_path):
    began = time.monotonic()
    done = run(command(tmp_path / "run", 3, "env.name=debug_faulty", "env.fault=raise",
                       "env.fault_step=3", "env.workers_per_sampler=0"), timeout=120)
    assert done.returncode != 0
    assert "FaultInjected" in done.stderr
    assert time.monotonic() - began < 60


@pytest.mark.parametrize("ranks, sig", [(1, signal.SIGTERM), (4, signal.SIGINT)])
def test_a_signal_stops_cleanly_with_files_closed(tmp_path, ranks, sig):
    out = tmp_path / "run"
    proc = subprocess.Popen(command(out, ranks, "run.total_env_steps=1000000", "env.workers_per_sampler=0"),
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            metrics = out / "metrics.jsonl"
            if metrics.exists() and any(m["kind"] == "update" for m in read_metrics(metrics)):
                break
            time.sleep(0.5)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_by"] in (sig.name, "signal on another rank")
    assert list(iter_episodes(out / "trajectories"))
    assert not list((out / "trajectories").glob("pending_rank*/*.hdf5"))  # packed at close


def test_a_scheduler_sigterm_to_every_process_leaves_the_env_workers_to_their_rank(tmp_path):
    """SLURM signals each process of a step, env workers included, and twice (slurmstepd, then
    srun). Workers that died with their rank would be restarted, die again, and fail the stop."""
    out = tmp_path / "run"
    proc = subprocess.Popen(command(out, 1, "run.total_env_steps=1000000", "env.workers_per_sampler=2"),
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            metrics = out / "metrics.jsonl"
            if metrics.exists() and any(m["kind"] == "update" for m in read_metrics(metrics)):
                break
            time.sleep(0.5)
        for _ in range(2):
            os.killpg(proc.pid, signal.SIGTERM)
            time.sleep(0.1)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_by"] == "SIGTERM"
    assert summary["lanes"]["sample"]["worker_restarts"] == 0, stderr[-3000:]


def test_resume_continues_weights_counters_and_trajectories(tmp_path):
    out = tmp_path / "run"
    first = run(command(out))
    assert first.returncode == 0, first.stderr[-3000:]
    before = json.loads((out / "summary.json").read_text())
    episodes_before = len(list(iter_episodes(out / "trajectories")))
    again = run(command(out, 1, "--resume", str(out), "run.total_env_steps=1400"))
    assert again.returncode == 0, again.stderr[-3000:]
    after = json.loads((out / "summary.json").read_text())
    assert after["policy_version"] > before["policy_version"]
    assert after["env_steps"] >= 1400
    ids = [ep.episode_id for ep in iter_episodes(out / "trajectories")]
    assert len(ids) == len(set(ids)) > episodes_before
