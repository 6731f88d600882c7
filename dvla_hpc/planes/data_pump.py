"""Data plane (CPU backend): moves slabs between ranks with mpi4py buffer sends (no pickle).

Lanes never see MPI: they put slot ids into an outbox queue and take slot ids from an inbox queue,
exactly as in single-process mode. The pump thread starts an Isend per outgoing slab (and frees
the slot when it completes) and keeps Irecvs pre-posted into free slots of the receiving pool.
A full inbox holds the slot back, which stops re-posting: backpressure reaches the sender."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from mpi4py import MPI

from dvla_hpc.lanes.lane import SlotQueue
from dvla_hpc.memory.accounting import DATA_PATH
from dvla_hpc.memory.layouts import SlabKind, validate
from dvla_hpc.memory.slab_pool import SlabPool


SCRATCH = -1


@dataclass
class Outbound:
    queue: SlotQueue
    pool: SlabPool
    tag: int
    destination: Callable[[int], int]  # slot -> destination rank
    in_flight: list[tuple[MPI.Request, int]] = field(default_factory=list)


@dataclass
class Inbound:
    source: int
    tag: int
    pool: SlabPool
    queue: SlotQueue
    kind: SlabKind
    max_count: int
    depth: int
    posted: list[tuple[MPI.Request, int]] = field(default_factory=list)
    held: list[int] = field(default_factory=list)  # received, waiting for room in the inbox
    received: int = 0
    scratch: np.ndarray | None = None  # shutdown only: peers' last slabs land here, then vanish


class DataPump(threading.Thread):
    def __init__(self, comm: MPI.Comm, max_sleep_s: float = 0.002):
        super().__init__(name="data-pump", daemon=True)
        self.comm = comm
        self.max_sleep_s = max_sleep_s
        self.outbound: list[Outbound] = []
        self.inbound: list[Inbound] = []
        self.running = threading.Event()
        self.draining = False
        self.error: BaseException | None = None
        self.bytes_sent = 0
        self.bytes_received = 0
        self.status = MPI.Status()

    def send_from(self, queue: SlotQueue, pool: SlabPool, tag: int, destination: Callable[[int], int]):
        self.outbound.append(Outbound(queue, pool, tag, destination))

    def receive_into(self, source: int, tag: int, pool: SlabPool, queue: SlotQueue, kind: SlabKind,
                     max_count: int, depth: int = 2):
        self.inbound.append(Inbound(source, tag, pool, queue, kind, max_count, depth,
                                    scratch=DATA_PATH.zeros("pump/scratch", (pool.layout.nbytes,), torch.uint8).numpy()))

    def run(self) -> None:
        self.running.set()
        delay = 50e-6
        try:
            while self.running.is_set():
                if self.step():
                    delay = 50e-6
                else:
                    time.sleep(delay)
                    delay = min(delay * 2, self.max_sleep_s)
        except BaseException as err:  # recorded for the rank's main loop, then the excepthook aborts
            self.error = err
            raise

    def step(self) -> bool:
        moved = False
        for out in self.outbound:
            moved |= self._advance_sends(out)
        for inb in self.inbound:
            moved |= self._advance_receives(inb)
        return moved

    def _advance_sends(self, out: Outbound) -> bool:
        moved = False
        if not self.draining:
            while (slot := out.queue.get(timeout=0)) is not None:
                raw = out.pool.raw[slot]
                out.in_flight.append((self.comm.Isend(raw, out.destination(slot), out.tag), slot))
                self.bytes_sent += raw.nbytes
                moved = True
        still = []
        for req, slot in out.in_flight:
            if req.Test():
                out.pool.release(slot)
                moved = True
            else:
                still.append((req, slot))
        out.in_flight[:] = still
        return moved

    def _advance_receives(self, inb: Inbound) -> bool:
        moved = False
        while inb.held and not self.draining and inb.queue.put_nowait(inb.held[0]):
            inb.held.pop(0)
            moved = True
        still = []
        for req, slot in inb.posted:
            if req.Test(self.status):
                moved = True
                self._accept(inb, slot)
            else:
                still.append((req, slot))
        inb.posted[:] = still
        if self.draining:
            if not inb.posted:
                inb.posted.append((self.comm.Irecv(inb.scratch, inb.source, inb.tag), SCRATCH))
            return moved
        while len(inb.posted) < inb.depth and not inb.held:
            slot = inb.pool.acquire(timeout=0)
            if slot is None:
                break
            inb.posted.append((self.comm.Irecv(inb.pool.raw[slot], inb.source, inb.tag), slot))
        return moved

    def _accept(self, inb: Inbound, slot: int) -> None:
        size = self.status.Get_count(MPI.BYTE)
        origin = f"data plane, slab from rank {inb.source}"
        if size != inb.pool.layout.nbytes:
            raise ValueError(f"{origin}: {size} bytes, expected {inb.pool.layout.nbytes}")
        self.bytes_received += size
        inb.received += 1
        if slot == SCRATCH:
            return
        if self.draining:
            inb.pool.release(slot)
            return
        validate(inb.pool.slots[slot]["header"], inb.kind, inb.max_count, origin)
        if not inb.queue.put_nowait(slot):
            inb.held.append(slot)

    def sends_pending(self) -> int:
        return sum(len(out.in_flight) + out.queue.qsize() for out in self.outbound)

    def drain_and_stop(self, comm_barrier: MPI.Comm, timeout_s: float = 60.0) -> None:
        """Shutdown: drop what was not sent yet, finish the sends in flight while accepting (and
        discarding) peers' slabs, wait until every rank has done the same (a non-blocking barrier),
        then cancel the receives still posted."""
        self.running.clear()
        if self.is_alive():
            self.join()
        self.draining = True
        for out in self.outbound:
            while (slot := out.queue.get(timeout=0)) is not None:
                out.pool.release(slot)
        for inb in self.inbound:
            for slot in inb.held:
                inb.pool.release(slot)
            inb.held.clear()
            while (slot := inb.queue.get(timeout=0)) is not None:
                inb.pool.release(slot)
        deadline = time.monotonic() + timeout_s
        barrier = None
        while barrier is None or not barrier.Test():
            if time.monotonic() > deadline:
                raise TimeoutError("data plane did not drain within the shutdown timeout")
            self.step()
            if barrier is None and not self.sends_pending():
                barrier = comm_barrier.Ibarrier()
            time.sleep(1e-4)
        for inb in self.inbound:
            for req, slot in inb.posted:
                req.Cancel()
                req.Wait()
                if slot != SCRATCH:
                    inb.pool.release(slot)
            inb.posted.clear()
