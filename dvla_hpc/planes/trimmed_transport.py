"""Episode slabs on the wire at their length: the header plus the filled rows of every per-step
field, as one mpi4py message described by a derived datatype, so neither side packs or copies.

An episode slab reserves `max_steps` rows per field; a 5-step success fills 5 of them. The sender
builds (once per length) an hindexed datatype over the header and the first COUNT rows of each
field, at their offsets in the slab. The receiver cannot post a receive for a length it does not
know yet, so each posted receive is a matched probe (`Improbe`): the message's size gives its
length, and the same datatype lands every byte at its offset in the receiving slab."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from mpi4py import MPI

from dvla_hpc.memory.layouts import H, SlabError
from dvla_hpc.memory.slab_pool import SlabLayout
from dvla_hpc.planes.transport import Closing, MpiTransfer, MpiTransport, Transfer


class RowTrimmedTransport(MpiTransport):
    """An MpiTransport for slabs whose first field is the int64 header and whose other fields
    each hold one row per step (the episode layout); COUNT in the header says how many rows."""

    def __init__(self, comm: MPI.Comm, layout: SlabLayout):
        super().__init__(comm)
        header, *rows = layout.fields.values()
        self.header, self.rows = header, rows
        self.max_rows = rows[0].shape[0]
        if header.name != "header" or any(f.shape[0] != self.max_rows for f in rows):
            raise ValueError(f"{layout.kind} slabs are not a header plus fields of "
                             f"{self.max_rows} rows each")
        self.row_bytes = sum(f.nbytes // self.max_rows for f in rows)
        self.types: dict[int, MPI.Datatype] = {}

    def bytes_for(self, count: int) -> int:
        return self.header.nbytes + count * self.row_bytes

    def count_for(self, nbytes: int, origin: str) -> int:
        count, rest = divmod(nbytes - self.header.nbytes, self.row_bytes)
        if rest or not 1 <= count <= self.max_rows:
            raise SlabError(f"{origin}: a {nbytes}-byte message is no episode of 1..{self.max_rows} "
                            f"steps ({self.header.nbytes} header bytes + {self.row_bytes} per step)")
        return count

    def datatype(self, count: int) -> MPI.Datatype:
        if count not in self.types:
            lengths = [self.header.nbytes] + [count * (f.nbytes // self.max_rows) for f in self.rows]
            offsets = [self.header.offset] + [f.offset for f in self.rows]
            self.types[count] = MPI.BYTE.Create_hindexed(lengths, offsets).Commit()
        return self.types[count]

    def expected_bytes(self, raw: np.ndarray) -> int:
        return self.bytes_for(self.checked_count(raw, "data plane: a received episode slab"))

    def checked_count(self, raw: np.ndarray, what: str) -> int:
        count = int(raw[: self.header.nbytes].view(np.int64)[H.COUNT])
        if not 1 <= count <= self.max_rows:
            raise SlabError(f"{what} says {count} steps, outside 1..{self.max_rows}")
        return count

    def isend(self, raw: np.ndarray, peer: int, tag: int) -> MpiTransfer:
        count = self.checked_count(raw, f"data plane: an episode slab to rank {peer}")
        request = self.comm.Isend([raw, 1, self.datatype(count)], peer, tag)
        return MpiTransfer(request, self.bytes_for(count))

    def irecv(self, raw: np.ndarray, peer: int, tag: int) -> "ProbedReceive":
        return ProbedReceive(self, raw, peer, tag)

    def close_receiving(self, posted: Sequence[Transfer], peer: int, tag: int) -> Closing:
        """A receive not matched yet has nothing posted in MPI: it just stops probing. A matched
        one completes, since its message is already on its way."""
        requests = []
        for transfer in posted:
            transfer.cancel()
            if transfer.request is not None:
                requests.append(transfer.request)
        return lambda: MPI.Request.Testall(requests)



class ProbedReceive:
    """A receive into `raw` that matches its message first (`Improbe`), then receives it with the
    datatype for the message's length."""

    __slots__ = ("transport", "raw", "peer", "tag", "request", "status", "count", "cancelled")

    def __init__(self, transport: RowTrimmedTransport, raw: np.ndarray, peer: int, tag: int):
        self.transport, self.raw, self.peer, self.tag = transport, raw, peer, tag
        self.request: MPI.Request | None = None
        self.status = MPI.Status()
        self.count = 0
        self.cancelled = False

    def done(self) -> bool:
        if self.request is None:
            if self.cancelled:
                return False
            message = self.transport.comm.Improbe(self.peer, self.tag, self.status)
            if message is None:
                return False
            origin = f"data plane, episode from rank {self.peer}"
            self.count = self.transport.count_for(self.status.Get_count(MPI.BYTE), origin)
            self.request = message.Irecv([self.raw, 1, self.transport.datatype(self.count)])
        return self.request.Test()

    def received_bytes(self) -> int:
        return self.transport.bytes_for(self.count)

    def cancel(self) -> None:
        self.cancelled = True
