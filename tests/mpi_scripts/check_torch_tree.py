"""mpiexec -n K check_torch_tree.py RANKS_PER_NODE NODES_PER_SWITCH MAX_FANOUT [cpu|cuda]:
three versions of a ~1 MB buffer in 64 KB chunks down the planned tree over torch p2p, bit-exact at
every member; then the CLOSE handshake ends the tree with a version and receives in flight."""
from __future__ import annotations

import sys

import torch
from mpi4py import MPI

from _common import install_abort_hooks, poll

install_abort_hooks()

from dvla_hpc.planes.broadcast_tree import count_crossings, plan_tree  # noqa: E402
from dvla_hpc.planes.torch_plane import init_torch_plane  # noqa: E402
from dvla_hpc.planes.torch_tree import TorchTreeBroadcast  # noqa: E402
from dvla_hpc.runtime.topology import detect_placement  # noqa: E402

ranks_per_node, nodes_per_switch, max_fanout = (int(a) for a in sys.argv[1:4])
on_gpu = len(sys.argv) > 4 and sys.argv[4] == "cuda"
N_FLOATS = (1 << 20) // 4 + 123  # ~1 MB with a short last chunk
CHUNK = 64 * 1024
VERSIONS = (1, 2, 3)
N_CHUNKS = -(-N_FLOATS * 4 // CHUNK)

world = MPI.COMM_WORLD
rank, size = world.Get_rank(), world.Get_size()
device = torch.device("cuda", rank % max(torch.cuda.device_count(), 1)) if on_gpu else torch.device("cpu")
plane = init_torch_plane(world, list(range(size)), list(range(size)), [0], device, timeout_s=60)
node_of, switch_of = detect_placement(world, ranks_per_node, nodes_per_switch)
tree = plan_tree(range(size), 0, node_of, switch_of, max_fanout=max_fanout)


def payload(version: int) -> torch.Tensor:
    return torch.randn(N_FLOATS, generator=torch.Generator().manual_seed(version)).to(device)


# Two buffers, as a weight holder swaps active and staging between versions.
buffers = [torch.zeros(N_FLOATS, device=device), torch.zeros(N_FLOATS, device=device)]
bcast = TorchTreeBroadcast(plane, list(range(size)), tree[rank], buffers[0], chunk_bytes=CHUNK)
assert N_CHUNKS > 1, "the test needs several chunks"

for version in VERSIONS:
    target = buffers[version % 2]
    if bcast.is_root:
        target.copy_(payload(version))
        bcast.start(version, source=target)
        poll(bcast.progress, f"root send of version {version}")
    else:
        bcast.post_receive(into=target)
        got = poll(bcast.progress, f"receive of version {version}")
        assert got == version, f"rank {rank}: got version {got}, expected {version}"
        if not torch.equal(target.view(torch.int32), payload(version).view(torch.int32)):
            raise AssertionError(f"rank {rank}: version {version} differs from the root's bytes")

# Shutdown while one more version is on its way: odd members have a receive posted, even ones
# are idle. The CLOSE handshake takes the version in (into the last buffer) and matches every receive.
LAST = VERSIONS[-1] + 1
if bcast.is_root:
    bcast.start(LAST, source=buffers[LAST % 2].copy_(payload(LAST)))
elif rank % 2:
    bcast.post_receive()
poll(lambda: bcast.cancel(timeout_s=0.5), "tree close handshake")
if not bcast.is_root and not torch.equal(buffers[VERSIONS[-1] % 2], payload(LAST)):
    raise AssertionError(f"rank {rank}: the version sent during shutdown did not land")
plane.shutdown()
world.Barrier()
if rank == 0:
    print(f"torch tree OK: {len(VERSIONS)} versions, {N_CHUNKS} chunks, "
          f"{count_crossings(tree, switch_of, node_of)}", flush=True)
