"""The torch.distributed data plane in real MPI jobs (gloo on CPU; NCCL where two GPUs exist):
process groups from the MPI plan, the broadcast tree over torch p2p, pump flows over torch."""
from __future__ import annotations

import pytest
import torch

from test_mpi_topology import MPIEXEC, assert_ok, run_mpi

pytestmark = [pytest.mark.mpi,
              pytest.mark.skipif(not MPIEXEC.exists(), reason="no mpiexec next to the interpreter")]


def assert_clean_exit(done) -> None:
    assert "terminate called" not in done.stderr, done.stderr
    assert "never matched" not in done.stderr, done.stderr  # the plane's report of stuck works


def test_plane_groups_from_the_mpi_plan_leave_outsiders_alone() -> None:
    done, seconds = run_mpi(4, "check_torch_plane.py")
    assert_ok(done, "torch plane OK: members [3, 0, 1], rank 2 left out")
    assert_clean_exit(done)
    assert seconds < 30


@pytest.mark.parametrize("ranks_per_node, nodes_per_switch, max_fanout", [
    (1, 2, 0),  # 6 nodes on 3 switches
    (2, 1, 1),  # fan-out 1: a chain, the deepest pipeline
])
def test_torch_tree_is_bit_exact_for_three_versions(ranks_per_node: int, nodes_per_switch: int,
                                                    max_fanout: int) -> None:
    done, seconds = run_mpi(6, "check_torch_tree.py",
                            str(ranks_per_node), str(nodes_per_switch), str(max_fanout))
    assert_ok(done, "torch tree OK: 3 versions, 17 chunks")
    assert_clean_exit(done)
    assert seconds < 30


@pytest.mark.parametrize("mode, message", [
    ("magic", "is corrupt: magic 0x3039"),
    ("size", "announces 399996 bytes but this member's buffer holds 400000"),
    ("checksum", "is corrupt: its checksum does not match its fields"),
    ("version", "announces negative version -7"),
])
def test_corrupt_torch_header_aborts_the_job_quickly(mode: str, message: str) -> None:
    done, seconds = run_mpi(3, "check_torch_bad_header.py", mode)
    assert done.returncode != 0
    assert "BroadcastError" in done.stderr and message in done.stderr, done.stderr
    assert "no error raised" not in done.stdout
    assert seconds < 25


def test_pump_flows_over_torch_drain_with_receives_posted() -> None:
    done, seconds = run_mpi(2, "check_torch_pump.py")
    assert_ok(done, "torch pump OK: 40 + 10 slabs, gloo")
    assert_clean_exit(done)
    assert seconds < 30


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2,
                    reason="NCCL between two processes needs two CUDA devices")
@pytest.mark.parametrize("script, args, marker", [
    ("check_torch_tree.py", ("1", "1", "0", "cuda"), "torch tree OK"),
    ("check_torch_pump.py", ("cuda",), "torch pump OK: 40 + 10 slabs, nccl"),
], ids=["tree", "pump"])
def test_the_same_code_runs_on_nccl(script: str, args: tuple[str, ...], marker: str) -> None:
    done, _ = run_mpi(2, script, *args)
    assert_ok(done, marker)
    assert_clean_exit(done)
