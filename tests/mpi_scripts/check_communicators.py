"""mpiexec -n 6: emulated placement, role plan, communicator split, a distribution broadcast."""
from __future__ import annotations

import numpy as np
from mpi4py import MPI

from _common import install_abort_hooks, poll

install_abort_hooks()

from dvla_hpc.planes.broadcast_tree import TreeBroadcast, plan_tree  # noqa: E402
from dvla_hpc.runtime.topology import (  # noqa: E402
    build_communicators, detect_placement, plan_layout)

world = MPI.COMM_WORLD
rank, size = world.Get_rank(), world.Get_size()
assert size == 6, f"run with mpiexec -n 6, got {size}"

real_nodes, real_switches = detect_placement(world)
assert real_nodes == [0] * size and real_switches == [0] * size, (real_nodes, real_switches)

node_of, switch_of = detect_placement(world, ranks_per_node=2, nodes_per_switch=2)
assert node_of == [0, 0, 1, 1, 2, 2], node_of
assert switch_of == [0, 0, 0, 0, 1, 1], switch_of

plan = plan_layout(size, learn_ranks=1, infer_ranks=0, node_of=node_of, switch_of=switch_of)
assert plan.roles == ("infer", "sim", "infer", "sim", "sim", "learn"), plan.roles
comms = build_communicators(world, plan)
my_role = plan.roles[rank]
assert comms.role.Get_size() == len(plan.ranks(my_role))
assert comms.role.Get_rank() == plan.ranks(my_role).index(rank)
for dup in (comms.control, comms.data):
    assert MPI.Comm.Compare(dup, world) == MPI.CONGRUENT

members = comms.distribution_world_ranks
assert members == [5, 0, 2], members
if rank in members:
    dist = comms.distribution
    assert dist.Get_size() == 3 and dist.Get_rank() == members.index(rank)
    assert (dist.Get_rank() == 0) == (rank == plan.learner_root)
    tree = plan_tree(range(3), 0, [node_of[w] for w in members], [switch_of[w] for w in members], 2)
    buffer = np.arange(10_000, dtype=np.int32) if rank == plan.learner_root else \
        np.zeros(10_000, dtype=np.int32)
    bcast = TreeBroadcast(dist, tree[dist.Get_rank()], buffer, chunk_bytes=4096)
    if bcast.is_root:
        bcast.start(version=7)
        poll(bcast.progress, "distribution send")
    else:
        bcast.post_receive()
        assert poll(bcast.progress, "distribution receive") == 7
        assert np.array_equal(buffer, np.arange(10_000, dtype=np.int32))
    assert bcast.cancel()
else:
    assert comms.distribution == MPI.COMM_NULL

comms.free()
world.Barrier()
if rank == 0:
    print(f"communicators OK: {plan.describe()}", flush=True)
