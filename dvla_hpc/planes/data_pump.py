"""Data plane: moves slabs between ranks, per flow over mpi4py buffer sends (the default) or
torch.distributed p2p (transport.py). No pickle.

Lanes never see the transport: they put slot ids into an outbox queue and take slot ids from an
inbox queue, exactly as in single-process mode. The pump thread starts a send per outgoing slab
(and frees the slot when it completes) and keeps receives pre-posted into free slots of the
receiving pool. A full inbox holds the slot back, which stops re-posting: backpressure reaches
the sender. Between polls the pump backs off (from its first sleep, short unless the host's cores
are shared: runtime/core_share.py), but a slot put into any of its outboxes wakes it at once: an
outgoing slab never waits out a sleep."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from mpi4py import MPI

from dvla_hpc.lanes.lane import SlotQueue
from dvla_hpc.memory.accounting import DATA_PATH
from dvla_hpc.memory.layouts import SlabError, SlabKind, validate
from dvla_hpc.memory.slab_pool import SlabPool
from dvla_hpc.planes.backoff import FIRST_SLEEP_S, Backoff, poll_until
from dvla_hpc.planes.transport import MpiTransport, Transfer, Transport


SCRATCH = -1


@dataclass
class Outbound:
    queue: SlotQueue
    pool: SlabPool
    tag: int
    destination: Callable[[int], int]  # slot -> destination rank
    transport: Transport
    in_flight: list[tuple[Transfer, int]] = field(default_factory=list)


@dataclass
class Inbound:
    source: int
    tag: int
    pool: SlabPool
    queue: SlotQueue
    kind: SlabKind
    max_count: int
    depth: int
    transport: Transport
    posted: list[tuple[Transfer, int]] = field(default_factory=list)
    held: list[int] = field(default_factory=list)  # received, waiting for room in the inbox
    received: int = 0
    scratch: np.ndarray | None = None  # shutdown only: peers' last slabs land here, then vanish


class DataPump(threading.Thread):
    def __init__(self, comm: MPI.Comm, max_sleep_s: float = 0.002, first_sleep_s: float = FIRST_SLEEP_S):
        super().__init__(name="data-pump", daemon=True)
        self.comm = comm
        self.max_sleep_s = max_sleep_s
        self.first_sleep_s = first_sleep_s
        self.outbound: list[Outbound] = []
        self.inbound: list[Inbound] = []
        self.running = threading.Event()
        self.outbox_put = threading.Event()  # set by every outbox's put (SlotQueue.set_on_put)
        self.draining = False
        self.error: BaseException | None = None
        self.bytes_sent = 0
        self.bytes_received = 0
        self.mpi = MpiTransport(comm)

    def send_from(self, queue: SlotQueue, pool: SlabPool, tag: int, destination: Callable[[int], int],
                  transport: Transport | None = None):
        """Send the slots put into `queue` to `destination(slot)`; `transport` defaults to MPI
        over the pump's communicator."""
        transport = transport or self.mpi
        transport.register(list(pool.raw))
        queue.set_on_put(self.outbox_put)
        self.outbound.append(Outbound(queue, pool, tag, destination, transport))

    def receive_into(self, source: int, tag: int, pool: SlabPool, queue: SlotQueue, kind: SlabKind,
                     max_count: int, depth: int = 2, transport: Transport | None = None):
        """Keep `depth` receives from `source` posted into free slots of `pool`; validated slabs go
        into `queue`. `transport` defaults to MPI over the pump's communicator."""
        transport = transport or self.mpi
        scratch = DATA_PATH.host_bytes("pump/scratch", (pool.layout.nbytes,))
        transport.register([*pool.raw, scratch])
        self.inbound.append(Inbound(source, tag, pool, queue, kind, max_count, depth, transport,
                                    scratch=scratch))

    def run(self) -> None:
        self.running.set()
        backoff = Backoff(self.max_sleep_s, self.first_sleep_s)
        try:
            while self.running.is_set():
                self.outbox_put.clear()  # before the step: a put after it is never slept through
                if self.step():
                    backoff.reset()
                else:
                    backoff.idle(self.outbox_put)
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
                transfer = out.transport.isend(out.pool.raw[slot], out.destination(slot), out.tag)
                out.in_flight.append((transfer, slot))
                self.bytes_sent += transfer.wire_bytes
                moved = True
        still = []
        for transfer, slot in out.in_flight:
            if transfer.done():
                out.pool.release(slot)
                moved = True
            else:
                still.append((transfer, slot))
        out.in_flight[:] = still
        return moved

    def _advance_receives(self, inb: Inbound) -> bool:
        moved = False
        while inb.held and not self.draining and inb.queue.put_nowait(inb.held[0]):
            inb.held.pop(0)
            moved = True
        still = []
        for transfer, slot in inb.posted:
            if transfer.done():
                moved = True
                self._accept(inb, slot, transfer.received_bytes())
            else:
                still.append((transfer, slot))
        inb.posted[:] = still
        if self.draining:
            if not inb.posted:
                inb.posted.append((inb.transport.irecv(inb.scratch, inb.source, inb.tag), SCRATCH))
            return moved
        while len(inb.posted) < inb.depth and not inb.held:
            slot = inb.pool.acquire(timeout=0)
            if slot is None:
                break
            inb.posted.append((inb.transport.irecv(inb.pool.raw[slot], inb.source, inb.tag), slot))
        return moved

    def _accept(self, inb: Inbound, slot: int, received: int | None) -> None:
        raw = inb.scratch if slot == SCRATCH else inb.pool.raw[slot]
        expected = inb.transport.expected_bytes(raw)
        size = expected if received is None else received
        origin = f"data plane, slab from rank {inb.source}"
        check_size(size, expected, origin)
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
        then close every flow: MPI cancels its posted receives; a torch flow cannot, so its
        receivers tell their sources how many are posted and the sources match them with fillers
        (transport.py). The torch plane itself stays up (the tree and the learners still use it):
        its owner calls plane.shutdown() once nothing is posted anywhere."""
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
        backoff = Backoff(self.max_sleep_s)
        while barrier is None or not barrier.Test():
            if time.monotonic() > deadline:
                raise TimeoutError("data plane did not drain within the shutdown timeout")
            if self.step():
                backoff.reset()
            if barrier is None and not self.sends_pending():
                barrier = comm_barrier.Ibarrier()
            backoff.idle()
        closings = [out.transport.close_sending(out.tag, out.pool.raw[0]) for out in self.outbound]
        closings += [inb.transport.close_receiving([t for t, _ in inb.posted], inb.source, inb.tag)
                     for inb in self.inbound]
        poll_until(lambda: all([closed() for closed in closings]),  # a list: every flow progresses
                   deadline - time.monotonic(), "closing the data plane's flows at shutdown")
        for inb in self.inbound:
            for _, slot in inb.posted:
                if slot != SCRATCH:
                    inb.pool.release(slot)
            inb.posted.clear()


def check_size(received: int, expected: int, origin: str) -> None:
    """A slab arrives whole or not at all: a short or long one is refused, naming its sender."""
    if received != expected:
        raise SlabError(f"{origin}: {received} bytes, expected {expected}")
