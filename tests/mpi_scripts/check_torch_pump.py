"""mpiexec -n 2 check_torch_pump.py [cpu|cuda]: data pump flows over TorchTransport both ways
(rank 0 -> 1 tag 5, a slow receiver: backpressure; rank 1 -> 0 tag 6), slabs intact and in order,
then drain_and_stop on both sides with receives still posted, the plane's shutdown, a clean exit."""
from __future__ import annotations

import sys
import threading
import time

import numpy as np
import torch
from mpi4py import MPI

from _common import install_abort_hooks, poll

install_abort_hooks()

from dvla_hpc.lanes.lane import SlotQueue  # noqa: E402
from dvla_hpc.memory.layouts import H, SlabKind, stamp  # noqa: E402
from dvla_hpc.memory.slab_pool import SlabLayout, SlabPool  # noqa: E402
from dvla_hpc.planes.data_pump import DataPump  # noqa: E402
from dvla_hpc.planes.torch_plane import init_torch_plane  # noqa: E402
from dvla_hpc.planes.torch_transport import TorchTransport  # noqa: E402

world = MPI.COMM_WORLD
rank = world.Get_rank()
peer = 1 - rank
device = torch.device("cuda", rank) if len(sys.argv) > 1 and sys.argv[1] == "cuda" else torch.device("cpu")
plane = init_torch_plane(world, [0, 1], [0, 1], [0], device, timeout_s=30)
LAYOUT = SlabLayout("test", [("header", np.int64, (16,)), ("payload", np.float32, (20_000,))])
FORWARD, BACKWARD = 40, 10  # slabs 0 -> 1 and 1 -> 0
STALL_AT, STALL_S = 5, 0.5

data = world.Dup()
pump = DataPump(data)
transport = TorchTransport(plane, peers=[peer])
out_pool, out_queue = SlabPool(LAYOUT, 3), SlotQueue(2, "out")
in_pool, in_queue = SlabPool(LAYOUT, 3), SlotQueue(2, "in")
sending, receiving = (FORWARD, BACKWARD) if rank == 0 else (BACKWARD, FORWARD)
pump.send_from(out_queue, out_pool, 5 + rank, lambda slot: peer, transport=transport)
pump.receive_into(peer, 5 + peer, in_pool, in_queue, SlabKind.EPISODE, max_count=1, depth=2,
                  transport=transport)
pump.start()


def produce() -> None:
    for i in range(sending):
        slot = poll(lambda: out_pool.acquire(timeout=0), "free slot", timeout_s=20)
        view = out_pool.slots[slot]
        stamp(view["header"], SlabKind.EPISODE)
        view["header"][H.COUNT] = 1
        view["header"][H.STEP] = i
        view["payload"][:] = i + 1000 * rank
        out_queue.put(slot, threading.Event())


producer = threading.Thread(target=produce, daemon=True)
producer.start()
for i in range(receiving):
    slot = poll(lambda: in_queue.get(timeout=0), f"slab {i}", timeout_s=20)
    header, payload = in_pool.slots[slot]["header"], in_pool.slots[slot]["payload"]
    assert header[H.STEP] == i and np.all(payload == i + 1000 * peer), f"rank {rank}: slab {i} corrupt"
    if rank == 1 and i == STALL_AT:  # the lane stops taking slabs: the pump must stop receiving
        time.sleep(STALL_S)
        landed = pump.inbound[0].received - (STALL_AT + 1)
        assert landed <= in_pool.count - 1, f"{landed} slabs landed while the lane held its slot"
    elif rank == 1:
        time.sleep(0.002)
    in_pool.release(slot)
producer.join(timeout=20)
poll(lambda: pump.sends_pending() == 0 or None, "all slabs sent")
assert len(pump.inbound[0].posted) > 0, f"rank {rank}: no receive posted before the drain"
pump.drain_and_stop(data, timeout_s=20)
assert in_pool.in_use == 0 and out_pool.in_use == 0, f"rank {rank}: slots leaked"
plane.shutdown(timeout_s=5)
world.Barrier()
if rank == 0:
    print(f"torch pump OK: {FORWARD} + {BACKWARD} slabs, {plane.backend}", flush=True)
