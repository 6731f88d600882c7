"""Control plane: fixed-size binary messages over non-blocking MPI on a communicator of their own.
Never carries bulk data, never blocks a lane: receives are pre-posted, sends are Isend."""
from __future__ import annotations

import threading
import zlib
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
from mpi4py import MPI

CONTROL_TAG = 7
MAGIC = 0x43544C31  # "CTL1"
VALUES = 12


class Kind(IntEnum):
    HEARTBEAT = 1
    STOP = 2  # learner -> everyone: finish now
    STOP_REQUEST = 3  # any rank -> learner: a signal arrived here
    GRANT = 4  # learner root -> a sim rank: step = the groups it may have started (cumulative)
    LANE_REPORT = 5  # any rank -> learner: one lane's shares and counters (runtime/reports.py)
    FINISHED = 6  # any rank -> learner: lanes joined, final reports sent
    RANK_REPORT = 7  # any rank -> learner: the rank's telemetry (runtime/reports.py)


MESSAGE = np.dtype([
    ("magic", "<u4"), ("kind", "<u4"), ("source", "<i4"), ("topic", "<i4"),
    ("version", "<i8"), ("step", "<i8"), ("payload_size", "<i8"),
    ("values", "<f8", (VALUES,)), ("checksum", "<u4"), ("pad", "<u4"),
])


class ControlError(ValueError):
    pass


@dataclass
class Message:
    kind: Kind
    source: int
    topic: int = 0
    version: int = 0
    step: int = 0
    payload_size: int = 0
    values: tuple[float, ...] = ()


def encode(msg: Message, out: np.ndarray) -> None:
    rec = out[0]
    rec["magic"], rec["kind"], rec["source"], rec["topic"] = MAGIC, msg.kind, msg.source, msg.topic
    rec["version"], rec["step"], rec["payload_size"] = msg.version, msg.step, msg.payload_size
    rec["values"][:] = 0.0
    rec["values"][: len(msg.values)] = msg.values
    rec["pad"] = 0
    rec["checksum"] = 0
    rec["checksum"] = zlib.crc32(out.tobytes())


def decode(buf: np.ndarray, origin: int, received_bytes: int = MESSAGE.itemsize) -> Message:
    if received_bytes != MESSAGE.itemsize:
        raise ControlError(f"control message from rank {origin}: {received_bytes} bytes, "
                           f"expected {MESSAGE.itemsize}")
    rec = buf[0]
    if rec["magic"] != MAGIC:
        raise ControlError(f"control message from rank {origin}: bad magic {int(rec['magic']):#x}")
    checksum = int(rec["checksum"])
    copy = buf.copy()
    copy[0]["checksum"] = 0
    if zlib.crc32(copy.tobytes()) != checksum:
        raise ControlError(f"control message from rank {origin}: checksum mismatch")
    try:
        kind = Kind(int(rec["kind"]))
    except ValueError:
        raise ControlError(f"control message from rank {origin}: unknown kind {int(rec['kind'])}") from None
    return Message(kind, int(rec["source"]), int(rec["topic"]), int(rec["version"]), int(rec["step"]),
                   int(rec["payload_size"]), tuple(float(v) for v in rec["values"]))


class ControlPlane:
    def __init__(self, comm: MPI.Comm, posted: int = 0, send_slots: int = 0):
        """Defaults grow with the world: the root posts one message to every rank at once (a
        heartbeat, STOP), and drains the heartbeats of many."""
        self.comm = comm
        self.rank = comm.Get_rank()
        posted = posted or max(8, min(64, comm.Get_size()))
        send_slots = send_slots or max(64, 2 * comm.Get_size() + 16)
        self.recv_bufs = [np.zeros(1, dtype=MESSAGE) for _ in range(posted)]
        self.recvs = [comm.Irecv(buf.view(np.uint8), MPI.ANY_SOURCE, CONTROL_TAG) for buf in self.recv_bufs]
        self.send_bufs = [np.zeros(1, dtype=MESSAGE) for _ in range(send_slots)]
        self.sends: list[MPI.Request | None] = [None] * send_slots
        self.next_send = 0  # slots are tried oldest first, so a post rarely tests more than one
        self.sent = self.received = 0
        self.status = MPI.Status()
        self.lock = threading.Lock()

    def post(self, dest: int, msg: Message) -> None:
        """Non-blocking: encode into a free send slot and Isend it (from any thread)."""
        with self.lock:
            count = len(self.sends)
            for step in range(count):
                i = (self.next_send + step) % count
                req = self.sends[i]
                if req is None or req.Test():
                    encode(msg, self.send_bufs[i])
                    self.sends[i] = self.comm.Isend(self.send_bufs[i].view(np.uint8), dest, CONTROL_TAG)
                    self.next_send = (i + 1) % count
                    self.sent += 1
                    return
        raise ControlError(f"rank {self.rank}: {len(self.sends)} control sends still in flight")

    def poll(self) -> list[Message]:
        received = []
        for i, req in enumerate(self.recvs):
            if req.Test(self.status):
                received.append(decode(self.recv_bufs[i], self.status.Get_source(),
                                       self.status.Get_count(MPI.BYTE)))
                self.recvs[i] = self.comm.Irecv(self.recv_bufs[i].view(np.uint8), MPI.ANY_SOURCE, CONTROL_TAG)
        self.received += len(received)
        return received

    def close(self) -> None:
        for req in self.recvs:
            req.Cancel()
        MPI.Request.Waitall(self.recvs)
        MPI.Request.Waitall([r for r in self.sends if r is not None])
