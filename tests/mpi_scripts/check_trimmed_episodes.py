"""Episodes cross the data pump at their length. Usage: check_trimmed_episodes.py ok|bad_size|bad_count|bad_header

Rank 0 sends episode slabs of several lengths to rank 1 through `RowTrimmedTransport`; rank 1
checks every filled row of every field, and both check the bytes that moved. bad_size sends a
message that is no whole number of steps; bad_count one whose header disagrees with its size;
bad_header one whose header claims more steps than a slab holds."""
from __future__ import annotations

import sys
import threading
import time

import numpy as np
from mpi4py import MPI

from _common import install_abort_hooks, poll
from dvla_hpc.config.schema import Config
from dvla_hpc.lanes.lane import SlotQueue
from dvla_hpc.memory.layouts import H, SlabKind, stamp
from dvla_hpc.memory.slab_pool import SlabPool
from dvla_hpc.planes.data_pump import DataPump
from dvla_hpc.planes.trimmed_transport import RowTrimmedTransport
from dvla_hpc.runtime.blueprint import Blueprint

install_abort_hooks()
world = MPI.COMM_WORLD
rank = world.Get_rank()
mode = sys.argv[1]
data = world.Dup()
bp = Blueprint.from_config(Config())
layout = bp.episode_layout
T = bp.spec.max_episode_steps
LENGTHS = [1, 5, T, 2, T - 1, 3, 1, 12]
TAG = 13
transport = RowTrimmedTransport(data, layout)


def fill(view: dict, i: int, count: int) -> None:
    stamp(view["header"], SlabKind.EPISODE)
    view["header"][H.COUNT] = count
    view["header"][H.EPISODE_ID] = i
    for name, field in view.items():
        if name != "header":
            field[:] = 0
            field[:count] = (np.arange(count) + 100 * i).reshape(-1, *[1] * (field.ndim - 1)) % 127


pool = SlabPool(layout, 3)
queue = SlotQueue(2, "episodes")
pump = DataPump(data)
stop = threading.Event()
if rank == 0:
    pump.send_from(queue, pool, TAG, lambda slot: 1, transport=transport)
    pump.start()
    for i, count in enumerate(LENGTHS):
        slot = poll(lambda: pool.acquire(timeout=0), "free slot")
        fill(pool.slots[slot], i, count)
        queue.put(slot, stop)
    trimmed = sum(map(transport.bytes_for, LENGTHS))  # the queue may be empty before the pump took the last
    poll(lambda: (pump.sends_pending() == 0 and pump.bytes_sent >= trimmed) or None, "all episodes sent")
    assert pump.bytes_sent == trimmed, pump.bytes_sent
    if mode == "bad_size":
        data.Send(np.zeros(transport.bytes_for(2) + 3, dtype=np.uint8), 1, TAG)
    if mode == "bad_count":
        fake = np.zeros(layout.nbytes, dtype=np.uint8)
        fill(layout.views(fake), 99, 5)  # says 5 steps, travels as 3
        data.Send([fake, 1, transport.datatype(3)], 1, TAG)
    if mode == "bad_header":
        fake = np.zeros(layout.nbytes, dtype=np.uint8)
        fill(layout.views(fake), 99, 3)
        layout.views(fake)["header"][H.COUNT] = T + 15
        data.Send([fake, 1, transport.datatype(3)], 1, TAG)
else:
    pump.receive_into(0, TAG, pool, queue, SlabKind.EPISODE, T, depth=2, transport=transport)
    pump.start()
    expected = SlabPool(layout, 1).slots[0]
    for i, count in enumerate(LENGTHS):
        slot = poll(lambda: queue.get(timeout=0), f"episode {i}")
        got = pool.slots[slot]
        fill(expected, i, count)
        assert got["header"][H.COUNT] == count and got["header"][H.EPISODE_ID] == i, got["header"]
        for name in expected:
            if name != "header":
                assert np.array_equal(got[name][:count], expected[name][:count]), f"episode {i}: {name}"
        pool.release(slot)
    assert pump.bytes_received == sum(map(transport.bytes_for, LENGTHS)), pump.bytes_received
    if mode != "ok":
        time.sleep(30)  # the pump thread's error aborts the job long before this ends
pump.drain_and_stop(data)
assert pool.in_use == 0, f"rank {rank}: {pool.in_use} slots leaked"
world.Barrier()
if rank == 1:
    full = layout.nbytes * len(LENGTHS)
    print(f"trimmed OK: {len(LENGTHS)} episodes, {pump.bytes_received} bytes (whole slabs: {full}); "
          f"{transport.row_bytes} bytes per step")
