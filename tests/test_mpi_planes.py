"""Real MPI jobs for the control plane and the data pump (each under a timeout)."""
from __future__ import annotations

import pytest

from test_mpi_topology import MPIEXEC, assert_ok, run_mpi

pytestmark = [pytest.mark.mpi,
              pytest.mark.skipif(not MPIEXEC.exists(), reason="no mpiexec next to the interpreter")]


def test_control_messages_and_slabs_cross_ranks_intact():
    done, _ = run_mpi(3, "check_planes.py", "ok")
    assert_ok(done, "planes OK: 3 ranks, 40 slabs")


def test_garbage_control_message_aborts_the_job_quickly():
    done, seconds = run_mpi(2, "check_planes.py", "bad_control")
    assert done.returncode != 0
    assert "ControlError" in done.stderr and "checksum mismatch" in done.stderr, done.stderr
    assert seconds < 20


def test_wrong_sized_slab_aborts_the_job_quickly():
    done, seconds = run_mpi(2, "check_planes.py", "bad_slab")
    assert done.returncode != 0
    assert "bytes, expected" in done.stderr, done.stderr
    assert seconds < 20


def test_episodes_cross_at_their_length_with_every_filled_row_intact():
    done, _ = run_mpi(2, "check_trimmed_episodes.py", "ok")
    assert_ok(done, "trimmed OK: 8 episodes")


@pytest.mark.parametrize("mode, message", [("bad_size", "is no episode of 1..25 steps"),
                                           ("bad_count", "bytes, expected"),
                                           ("bad_header", "says 40 steps, outside 1..25")])
def test_an_episode_message_that_is_no_episode_aborts_the_job_naming_it(mode, message):
    done, seconds = run_mpi(2, "check_trimmed_episodes.py", mode)
    assert done.returncode != 0
    assert message in done.stderr, done.stderr
    assert seconds < 20
