"""mpiexec -n K check_tree_broadcast.py RANKS_PER_NODE NODES_PER_SWITCH MAX_FANOUT:
two versions of a ~3 MB float32 buffer, 256 KB chunks, bit-exact at every member."""
from __future__ import annotations

import sys

import numpy as np
from mpi4py import MPI

from _common import install_abort_hooks, poll

install_abort_hooks()

from dvla_hpc.planes.broadcast_tree import TreeBroadcast, count_crossings, plan_tree  # noqa: E402
from dvla_hpc.runtime.topology import detect_placement  # noqa: E402

ranks_per_node, nodes_per_switch, max_fanout = (int(a) for a in sys.argv[1:4])
N_FLOATS = 3 * (1 << 20) // 4 + 123  # ~3 MB with a short last chunk


def payload(version: int) -> np.ndarray:
    return np.random.default_rng(version).standard_normal(N_FLOATS, dtype=np.float32)


comm = MPI.COMM_WORLD.Dup()
rank = comm.Get_rank()
node_of, switch_of = detect_placement(comm, ranks_per_node, nodes_per_switch)
tree = plan_tree(range(comm.Get_size()), 0, node_of, switch_of, max_fanout=max_fanout)
# Two buffers, as a weight holder swaps active and staging between versions.
buffers = [np.zeros(N_FLOATS, dtype=np.float32), np.zeros(N_FLOATS, dtype=np.float32)]
bcast = TreeBroadcast(comm, tree[rank], buffers[0], chunk_bytes=256 * 1024, tag_base=300)

for version in (1, 2):
    target = buffers[version % 2]
    if bcast.is_root:
        target[:] = payload(version)
        bcast.start(version, source=target)
        poll(bcast.progress, f"root send of version {version}")
    else:
        bcast.post_receive(into=target)
        got = poll(bcast.progress, f"receive of version {version}")
        assert got == version, f"rank {rank}: got version {got}, expected {version}"
        expected = payload(version)
        if not np.array_equal(target.view(np.uint32), expected.view(np.uint32)):
            raise AssertionError(f"rank {rank}: version {version} differs from the root's bytes")

if not bcast.is_root:
    bcast.post_receive()  # a receive still posted at shutdown must cancel cleanly
assert bcast.cancel(), f"rank {rank}: cancel left requests pending"
comm.Barrier()
if rank == 0:
    print(f"broadcast OK: {count_crossings(tree, switch_of, node_of)}", flush=True)
comm.Free()
