"""Small MPI jobs: communicator split, emulated placement, tree broadcast, corrupt headers."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "tests" / "mpi_scripts"
MPIEXEC = Path(sys.executable).parent / "mpiexec"
TIMEOUT_S = 60

pytestmark = [pytest.mark.mpi,
              pytest.mark.skipif(not MPIEXEC.exists(), reason=f"no mpiexec next to {sys.executable}")]


def run_mpi(n: int, script: str, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PMI_", "PMIX_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    command = [str(MPIEXEC), "-n", str(n), sys.executable, str(SCRIPTS / script), *args]
    began = time.monotonic()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    return done, time.monotonic() - began


def assert_ok(done: subprocess.CompletedProcess[str], marker: str) -> None:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert marker in done.stdout, done.stdout
    assert "persistent request" not in done.stderr, done.stderr  # MPICH's leak warning


def test_communicators_and_emulated_placement() -> None:
    done, _ = run_mpi(6, "check_communicators.py")
    assert_ok(done, "communicators OK: 6 ranks on 3 node(s), 2 switch(es)")


@pytest.mark.parametrize("ranks_per_node, nodes_per_switch, max_fanout", [
    (1, 2, 0),  # 6 nodes on 3 switches
    (2, 1, 1),  # fan-out 1: a chain, the deepest pipeline
    (2, 2, 16),  # 3 nodes on 2 switches
])
def test_tree_broadcast_is_bit_exact_for_two_versions(ranks_per_node: int, nodes_per_switch: int,
                                                     max_fanout: int) -> None:
    done, _ = run_mpi(6, "check_tree_broadcast.py",
                      str(ranks_per_node), str(nodes_per_switch), str(max_fanout))
    assert_ok(done, "broadcast OK")


@pytest.mark.parametrize("mode, message", [
    ("magic", "is corrupt: magic 0x3039"),
    ("size", "announces 399996 bytes but this member's buffer holds 400000"),
    ("short", "has 4 int64 fields, expected 8"),
    ("long", "failed (wrong message size?)"),
    ("crc", "fails its CRC32 check"),
])
def test_corrupt_header_aborts_the_job_quickly(mode: str, message: str) -> None:
    done, elapsed = run_mpi(3, "check_bad_header.py", mode)
    assert done.returncode != 0, done.stdout
    assert "BroadcastError" in done.stderr and message in done.stderr, done.stderr
    assert "no error raised" not in done.stdout
    assert elapsed < 20, f"abort took {elapsed:.1f}s"
