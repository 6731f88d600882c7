"""The data pump sleeps between polls, but a slot put into one of its outboxes wakes it at once."""
from __future__ import annotations

import threading
import time

import numpy as np
from mpi4py import MPI

from dvla_hpc.lanes.lane import SlotQueue
from dvla_hpc.memory.slab_pool import SlabLayout, SlabPool
from dvla_hpc.planes.backoff import Backoff
from dvla_hpc.planes.data_pump import DataPump

LAYOUT = SlabLayout("test", [("header", np.int64, (16,)), ("payload", np.float32, (8,))])


class SentAt:
    """A transport whose sends complete at once; it notes when each started."""

    def __init__(self):
        self.times: list[float] = []

    def register(self, buffers) -> None:
        pass

    def isend(self, raw, peer, tag):
        self.times.append(time.monotonic())
        return Done(raw.nbytes)


class Done:
    def __init__(self, nbytes: int):
        self.wire_bytes = nbytes

    def done(self) -> bool:
        return True


def test_backoff_sleeps_its_delay_unless_woken():
    backoff = Backoff(max_sleep_s=30.0)
    backoff.delay = 0.05
    t0 = time.monotonic()
    backoff.idle(threading.Event())
    assert time.monotonic() - t0 >= 0.05
    woken = threading.Event()
    woken.set()
    backoff.delay = 30.0
    t0 = time.monotonic()
    backoff.idle(woken)
    assert time.monotonic() - t0 < 1.0


def test_backoff_starts_from_its_first_sleep_and_returns_to_it_after_work():
    backoff = Backoff(max_sleep_s=0.008, first_sleep_s=0.002)
    backoff.idle()
    backoff.idle()
    assert backoff.delay == 0.008  # 2 ms, 4 ms, then the cap
    backoff.reset()
    assert backoff.delay == 0.002


def test_a_slab_put_while_the_pump_sleeps_long_goes_out_at_once():
    pump = DataPump(MPI.COMM_SELF, max_sleep_s=30.0)
    transport, pool, outbox = SentAt(), SlabPool(LAYOUT, 2), SlotQueue(2, "out")
    pump.send_from(outbox, pool, tag=5, destination=lambda slot: 0, transport=transport)
    pump.start()
    try:
        time.sleep(3.0)  # idle: the pump's sleeps have doubled to 1-2 s by now
        slot = pool.acquire(timeout=1.0)
        put_at = time.monotonic()
        assert outbox.put_nowait(slot)
        deadline = put_at + 10.0
        while not transport.times and time.monotonic() < deadline:
            time.sleep(0.001)
        assert transport.times, "the pump never sent the slab"
        assert transport.times[0] - put_at < 0.25
        assert pool.acquire(timeout=0) is not None  # the slot never used ...
        assert pool.acquire(timeout=5.0) is not None  # ... and the sent one, freed once its send completed
    finally:
        pump.running.clear()
        pump.outbox_put.set()
        pump.join(timeout=60)
    assert not pump.is_alive() and pump.error is None
