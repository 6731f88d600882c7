"""Whole runs and refusals of `python -m dvla_hpc.main` for the GPU-era layout: both modes write
the same summary keys, data-parallel learners over torch.distributed (gloo here) stay identical,
`--plan` prints without allocating, and plans that cannot run are refused with exit code 2."""
from __future__ import annotations

import json
import resource
import sys

import pytest
import torch

from test_end_to_end import command, run

pytestmark = pytest.mark.slow


def key_paths(tree: dict, prefix: str = "") -> set[str]:
    """Every key path of a summary, except the per-role entries under "ranks" (which roles ran
    differs between one process and an MPI job; each entry has the same keys) and the samplers
    under the "..._trained_by_sampler" tallies (sampler 0 in one process, the sim ranks under MPI)."""
    paths = set()
    for key, value in tree.items():
        path = f"{prefix}{key}"
        paths.add(path)
        if isinstance(value, dict) and key not in ("ranks", "allocated_after_warmup_by") \
                and not key.endswith("_trained_by_sampler") and value:
            paths |= key_paths(value, path + ".")
    return paths


@pytest.mark.mpi
def test_both_modes_write_the_same_summary_keys(tmp_path):
    local, mpi = tmp_path / "local", tmp_path / "mpi"
    done = run(command(local))
    assert done.returncode == 0, done.stderr[-3000:]
    done = run(command(mpi, 4, "env.workers_per_sampler=0"))
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = (json.loads((d / "summary.json").read_text()) for d in (local, mpi))
    assert key_paths(a) == key_paths(b), key_paths(a) ^ key_paths(b)
    role_keys = {frozenset(entry) for s in (a, b) for entry in s["ranks"].values()}
    assert len(role_keys) == 1


@pytest.mark.mpi
def test_data_parallel_learners_over_torch_distributed_stay_identical(tmp_path):
    out = tmp_path / "run"
    done = run(command(out, 6, "env.workers_per_sampler=0", "layout.learn_ranks=2",
                       "planes.data_backend=torch", "run.total_env_steps=1200"))
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["learners"] == 2 and summary["data_plane"]["backend"] == "torch"
    assert summary["replica_checks"] == summary["updates"] > 0  # weights compared after every update
    trained = summary["updates"] + summary["updates_without_samples"]  # a group from each learner in each
    assert sum(summary["groups_trained_by_sampler"].values()) == 2 * trained
    assert summary["data_plane"]["mib_received"] > 0 and summary["weight_swaps"] > 0
    assert summary["heartbeats"]["ranks"] == 5


def test_plan_of_a_7b_model_prints_and_exits_without_allocating_it(tmp_path):
    done = run([sys.executable, "-m", "dvla_hpc.main", "--plan", "model.preset=7b", "run.device=cpu"],
               timeout=120)
    assert done.returncode == 0, done.stderr
    assert "6,8" in done.stdout and "parameters" in done.stdout  # ~6.85e9 parameters
    for row in ("weights", "gradients", "optimizer", "activations", "staging", "slabs"):
        assert row in done.stdout
    assert "DOES NOT FIT" in done.stdout
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss < 3 * 2**20  # KiB: far below 7b's 26 GiB


def test_plan_for_many_ranks_shows_roles_and_devices():
    done = run([sys.executable, "-m", "dvla_hpc.main", "--plan", "--ranks", "16", "layout.ranks_per_node=8",
                "layout.learn_ranks=2", "layout.infer_ranks=2", "run.device=cpu"], timeout=120)
    assert done.returncode == 0, done.stderr
    assert "16 ranks on 2 node(s)" in done.stdout and "12 sim, 2 infer, 2 learn" in done.stdout
    assert "learn ranks -> devices: 14:cpu, 15:cpu" in done.stdout


def test_a_run_whose_plan_does_not_fit_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "run"
    done = run(command(out, 1, "model.preset=7b", "run.device=cpu"), timeout=120)
    assert done.returncode == 2
    assert "memory plan refused" in done.stderr and "bytes" in done.stderr and "are free" in done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a host without CUDA")
def test_cuda_asked_without_a_gpu_is_refused(tmp_path):
    done = run(command(tmp_path / "run", 1, "run.device=cuda"), timeout=120)
    assert done.returncode == 2
    assert "run.device=cuda" in done.stderr and "Traceback" not in done.stderr
