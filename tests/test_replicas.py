"""Data-parallel learners: identical weights after every update, over mpi4py and over gloo."""
from __future__ import annotations

import pytest

from dvla_hpc.lanes.sample import GROUP_KEY_STRIDE, learner_for_group
from test_mpi_topology import MPIEXEC, assert_ok, run_mpi


def test_groups_round_robin_over_learners_and_never_split():
    counts = [0, 0, 0]
    for sampler in range(4):
        for index in range(30):
            counts[learner_for_group(sampler * GROUP_KEY_STRIDE + index, 3)] += 1
    assert counts == [40, 40, 40]
    assert {learner_for_group(7, 1), learner_for_group(GROUP_KEY_STRIDE * 5 + 3, 1)} == {0}


needs_mpiexec = pytest.mark.skipif(not MPIEXEC.exists(), reason="no mpiexec next to the interpreter")


@pytest.mark.mpi
@needs_mpiexec
@pytest.mark.parametrize("backend", ["mpi", "torch"])
@pytest.mark.parametrize("mode", ["identical", "uneven"])
def test_replicas_stay_bitwise_identical(backend, mode):
    done, _ = run_mpi(3, "check_replicas.py", backend, mode)
    assert_ok(done, f"replicas OK: 3 learners, {backend}, {mode}, 3 updates bitwise identical")


@pytest.mark.mpi
@needs_mpiexec
def test_a_replica_that_drifts_is_caught():
    done, _ = run_mpi(2, "check_replicas.py", "mpi", "diverge")
    assert done.returncode == 0, done.stderr
    assert "divergence caught: learner replicas hold different weights after version 2" in done.stdout
