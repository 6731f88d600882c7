"""The parts of `make gpu-check` that also run on a CPU: the weight tree over torch.distributed
(gloo here, NCCL on GPUs) and the memory plan against a learner's measured peak."""
from __future__ import annotations

import json
import sys

import pytest

from test_end_to_end import MPIEXEC, run

pytestmark = pytest.mark.slow


@pytest.mark.mpi
def test_tree_bandwidth_moves_identical_bytes_over_gloo(tmp_path):
    done = run([str(MPIEXEC), "-n", "3", sys.executable, "-m", "dvla_hpc.bench", "tree_bandwidth",
                "--out", str(tmp_path), "--versions", "3", "model.preset=small", "run.device=cpu",
                "layout.ranks_per_node=1", "layout.broadcast_chunk_kib=1024"], timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "tree_bandwidth.json").read_text())
    assert result["backend"] == "gloo" and result["bytes_identical_every_version"]
    assert result["bytes"] == 4 * result["parameters"] > 40e6 and result["gb_per_s_best"] > 0


def test_memory_plan_is_within_reach_of_the_measured_peak(tmp_path):
    done = run([sys.executable, "-m", "dvla_hpc.bench", "memory_fit", "--out", str(tmp_path),
                "model.preset=small", "run.device=cpu"], timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "memory_fit.json").read_text())
    # On the CPU the peak is the growth of the process's max RSS (allocator slack and torch's own
    # buffers included), so only a loose band: the plan must not be off by a factor of two.
    assert 0.5 < result["measured_over_predicted"] < 2.0, result


def test_gpu_check_runs_only_the_parts_named(tmp_path):
    done = run([sys.executable, "-m", "dvla_hpc.bench", "gpu_check", "--out", str(tmp_path),
                "--only", "memory_fit,warp_drive"], timeout=60)
    assert done.returncode == 2 and "unknown parts ['warp_drive']" in done.stderr
    done = run([sys.executable, "-m", "dvla_hpc.bench", "gpu_check", "--out", str(tmp_path),
                "--only", "memory_fit", "--tree-preset", "tiny"], timeout=120)
    results = json.loads((tmp_path / "gpu_check.json").read_text())
    assert set(results) == {"started", "memory_fit"}
    # no GPU here: run.device=cuda is refused, the part fails, and so does the check
    assert done.returncode == 1 and results["memory_fit"]["exit"] not in (0, None)
