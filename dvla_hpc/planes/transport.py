"""How the data pump moves one slab (a uint8 numpy array): mpi4py buffer sends here, or
torch.distributed p2p (torch_transport.py). Peers are world ranks. Everything is polled, nothing
blocks.

    register(buffers)                     once per flow: every buffer it will carry
    isend(raw, peer, tag) / irecv(...)    -> Transfer: done(), received_bytes(); a send's wire_bytes
    expected_bytes(raw)                   what a received slab with this header must have carried
    close_sending(tag, filler)            at shutdown, after every rank's sends completed
    close_receiving(posted, peer, tag)    -> a callable that says when the flow is closed

MPI cancels a posted receive; a torch flow closes with a handshake instead (torch_transport.py)."""
from __future__ import annotations

from typing import Callable, Protocol, Sequence

import numpy as np
from mpi4py import MPI

Closing = Callable[[], bool]  # polled until True
MAX_POSTED = 1 << 16  # a receiver announcing more posted receives than this is talking nonsense


class Transfer(Protocol):
    wire_bytes: int  # a send's bytes on the wire

    def done(self) -> bool:
        """Polled; True once the transfer completed (raises if it failed)."""

    def received_bytes(self) -> int | None:
        """After done(): the bytes that landed, or None where the transport delivers exactly the
        posted size (torch p2p: a longer message is a fatal transport error)."""


class Transport(Protocol):
    def register(self, buffers: Sequence[np.ndarray]) -> None: ...
    def isend(self, raw: np.ndarray, peer: int, tag: int) -> Transfer: ...
    def irecv(self, raw: np.ndarray, peer: int, tag: int) -> Transfer: ...
    def expected_bytes(self, raw: np.ndarray) -> int: ...
    def close_sending(self, tag: int, filler: np.ndarray) -> Closing: ...
    def close_receiving(self, posted: Sequence[Transfer], peer: int, tag: int) -> Closing: ...


class MpiTransfer:
    __slots__ = ("request", "status", "wire_bytes")

    def __init__(self, request: MPI.Request, wire_bytes: int = 0):
        self.request, self.status, self.wire_bytes = request, MPI.Status(), wire_bytes

    def done(self) -> bool:
        return self.request.Test(self.status)

    def received_bytes(self) -> int:
        return self.status.Get_count(MPI.BYTE)


class MpiTransport:
    """Isend/Irecv on the slab itself over `comm`; the received size comes from the status."""

    def __init__(self, comm: MPI.Comm):
        self.comm = comm

    def register(self, buffers: Sequence[np.ndarray]) -> None:
        pass

    def isend(self, raw: np.ndarray, peer: int, tag: int) -> MpiTransfer:
        return MpiTransfer(self.comm.Isend(raw, peer, tag), raw.nbytes)

    def irecv(self, raw: np.ndarray, peer: int, tag: int) -> MpiTransfer:
        return MpiTransfer(self.comm.Irecv(raw, peer, tag))

    def expected_bytes(self, raw: np.ndarray) -> int:
        return raw.nbytes

    def close_sending(self, tag: int, filler: np.ndarray) -> Closing:
        return lambda: True

    def close_receiving(self, posted: Sequence[Transfer], peer: int, tag: int) -> Closing:
        requests = [transfer.request for transfer in posted]
        for request in requests:
            request.Cancel()
        return lambda: MPI.Request.Testall(requests)
