"""Control plane and data pump between real MPI ranks. Usage: check_planes.py ok|bad_control|bad_slab"""
from __future__ import annotations

import sys
import threading
import time

import numpy as np
from mpi4py import MPI

from _common import install_abort_hooks, poll
from dvla_hpc.lanes.lane import SlotQueue
from dvla_hpc.memory.layouts import H, SlabKind, stamp
from dvla_hpc.memory.slab_pool import SlabLayout, SlabPool
from dvla_hpc.planes.control import CONTROL_TAG, MESSAGE, ControlPlane, Kind, Message, encode
from dvla_hpc.planes.data_pump import DataPump

install_abort_hooks()
world = MPI.COMM_WORLD
rank, size = world.Get_rank(), world.Get_size()
mode = sys.argv[1]
control = ControlPlane(world.Dup())
data = world.Dup()
LAYOUT = SlabLayout("test", [("header", np.int64, (16,)), ("payload", np.float32, (20_000,))])
SLABS = 40

if mode == "bad_control" and rank == 1:
    forged = np.zeros(1, dtype=MESSAGE)
    encode(Message(Kind.LANE_REPORT, 1, values=(1.0,)), forged)
    forged[0]["values"][0] = 2.0  # corrupted in transit: the checksum no longer matches
    control.comm.Send(forged.view(np.uint8), 0, CONTROL_TAG)
    time.sleep(30)  # rank 0 must abort the job long before this ends
if mode == "bad_control" and rank == 0:
    poll(lambda: control.poll() or None, "garbage control message")

# Control plane: every rank reports to rank 0, rank 0 answers STOP.
if rank == 0:
    seen: dict[int, list[Kind]] = {}
    def collect():
        for msg in control.poll():
            seen.setdefault(msg.source, []).append(msg.kind)
            if msg.kind == Kind.LANE_REPORT:
                assert msg.values[:3] == (float(msg.source), 0.5, 2.0), msg.values
        return all(len(seen.get(r, [])) == 2 for r in range(1, size)) or None
    poll(collect, "metrics from every rank")
    for r in range(1, size):
        control.post(r, Message(Kind.STOP, 0, version=42))
else:
    control.post(0, Message(Kind.HEARTBEAT, rank))
    control.post(0, Message(Kind.LANE_REPORT, rank, values=(float(rank), 0.5, 2.0)))
    stop = poll(lambda: next(iter(control.poll()), None), "STOP")
    assert stop.kind == Kind.STOP and stop.version == 42 and stop.source == 0

# Data pump: rank 0 streams slabs to rank 1 whose lane is slower (backpressure, no loss).
pool = SlabPool(LAYOUT, 3)
queue = SlotQueue(2, "test")
pump = DataPump(data)
stop_event = threading.Event()
if rank == 0:
    pump.send_from(queue, pool, 5, lambda slot: 1)
    pump.start()
    for i in range(SLABS):
        slot = poll(lambda: pool.acquire(timeout=0), "free slot")
        view = pool.slots[slot]
        stamp(view["header"], SlabKind.EPISODE)
        view["header"][H.COUNT] = 1
        view["payload"][:] = i
        queue.put(slot, stop_event)
    poll(lambda: pump.sends_pending() == 0 or None, "all slabs sent")
    if mode == "bad_slab":
        data.Send(np.zeros(100, dtype=np.uint8), 1, 5)
elif rank == 1:
    pump.receive_into(0, 5, pool, queue, SlabKind.EPISODE, max_count=1, depth=2)
    pump.start()
    for i in range(SLABS):
        slot = poll(lambda: queue.get(timeout=0), f"slab {i}")
        time.sleep(0.002)
        assert np.all(pool.slots[slot]["payload"] == i), f"slab {i} out of order or corrupt"
        pool.release(slot)
    if mode == "bad_slab":
        time.sleep(30)  # the pump thread's error aborts the job long before this ends
pump.drain_and_stop(data)
assert pool.in_use == 0, f"rank {rank}: {pool.in_use} slots leaked"
control.close()
world.Barrier()
if rank == 0:
    print(f"planes OK: {size} ranks, {SLABS} slabs")
