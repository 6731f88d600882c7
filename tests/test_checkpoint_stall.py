"""The checkpoint-stall bench's arithmetic, and one traced job end to end."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dvla_hpc.bench.checkpoint_stall import SETTINGS, stall_figures

WINDOWS = [(2.0, 3.0), (6.0, 6.5)]


def servings(ends, took_s=0.01):
    return [(t - took_s, t) for t in ends]


def test_steady_serving_through_checkpoints_reads_as_no_stall():
    found = stall_figures(servings(np.arange(0.05, 10.0, 0.1)), WINDOWS)
    assert found["checkpoints"] == 2 and found["share_of_time_checkpointing"] == pytest.approx(1.5 / 9.9, abs=1e-3)
    assert 0.9 <= found["rate_during_over_otherwise"] <= 1.1
    assert found["serving_ms_during"] == pytest.approx(found["serving_ms_otherwise"]) == pytest.approx(10)
    assert found["longest_gap_ms_overlapping_a_checkpoint"] == pytest.approx(100, abs=1)


def test_serving_that_stops_while_a_checkpoint_is_written_reads_as_a_stall():
    ends = [t for t in np.arange(0.05, 10.0, 0.1) if not any(a <= t < b for a, b in WINDOWS)]
    found = stall_figures(servings(ends), WINDOWS)
    assert found["servings_during_checkpoints"] == 0 and found["rate_during_over_otherwise"] == 0
    assert found["longest_gap_ms_overlapping_a_checkpoint"] >= 1000
    assert found["longest_gap_ms_otherwise"] == pytest.approx(100, abs=1)


def test_servings_slowed_by_a_checkpoint_read_as_slower_during_it():
    slow = [(t - (0.05 if any(a <= t < b for a, b in WINDOWS) else 0.01), t) for t in np.arange(0.05, 10.0, 0.1)]
    found = stall_figures(slow, WINDOWS)
    assert found["serving_ms_during"] > 3 * found["serving_ms_otherwise"]


def test_nothing_to_compare_is_an_error_not_a_ratio():
    with pytest.raises(ValueError, match="0 checkpoints"):
        stall_figures(servings([0.5, 1.0]), [])


@pytest.mark.timeout(300)
def test_a_traced_job_notes_its_servings_and_its_checkpoints(tmp_path):
    trace = tmp_path / "trace"
    trace.mkdir()
    cmd = [sys.executable, "-m", "dvla_hpc.bench.checkpoint_stall", "--trace", str(trace), "--out",
           str(tmp_path / "run"), *SETTINGS, "run.wall_clock_limit_s=15"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=280,
                          env={**os.environ, "MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    noted = json.loads((trace / "rank0.json").read_text())
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert len(noted["checkpoints"]) == summary["lanes"]["learn"]["checkpoints"] == summary["updates"] > 0
    assert len(noted["served"]) == summary["lanes"]["infer"]["policy_calls"]
    assert all(a < b for a, b in noted["checkpoints"]) and all(a < b for a, b in noted["served"])
