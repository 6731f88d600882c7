"""The data pump's slabs over torch.distributed p2p: gloo carries the host slab itself (zero
copy), NCCL goes through a device bounce buffer per slab.

torch.distributed cannot cancel a posted receive (see torch_plane.py), so a torch flow closes with
a handshake over the plane's MPI communicator: each receiver tells its source how many receives it
still has posted, and the source matches each with a filler message."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from dvla_hpc.memory.accounting import DATA_PATH
from dvla_hpc.planes.torch_plane import TorchPlane, WorkStream
from dvla_hpc.planes.transport import MAX_POSTED, Closing, Transfer


class TorchTransfer:
    __slots__ = ("stream", "ticket", "landing", "wire_bytes")

    def __init__(self, stream: WorkStream, ticket: int,
                 landing: tuple[torch.Tensor, torch.Tensor] | None = None, wire_bytes: int = 0):
        self.stream, self.ticket, self.wire_bytes = stream, ticket, wire_bytes
        self.landing = landing  # (host slab, device bounce): copied down once the receive is done

    def done(self) -> bool:
        if not self.stream.done(self.ticket):
            return False
        if self.landing is not None:
            host, bounce = self.landing
            host.copy_(bounce)
            self.landing = None
        return True

    def received_bytes(self) -> None:
        return None


class TorchTransport:
    """p2p over the plane's torch world with the flow's tag. `peers`: the world ranks this
    transport talks to. Each peer it sends to must receive that flow: the close handshake asks
    every peer how many receives to match."""

    def __init__(self, plane: TorchPlane, peers: Sequence[int]):
        self.plane, self.peers = plane, list(peers)
        for peer in self.peers:
            plane.torch_rank(peer)  # raises for a rank outside the plane
        self._known = set(self.peers)
        self._bounce = plane.device.type != "cpu"
        self._wire: dict[int, tuple[np.ndarray, torch.Tensor, torch.Tensor | None]] = {}
        self._streams: dict[tuple[str, int, int], WorkStream] = {}

    def register(self, buffers: Sequence[np.ndarray]) -> None:
        for raw in buffers:
            self._wire_for(raw)

    def isend(self, raw: np.ndarray, peer: int, tag: int) -> TorchTransfer:
        if peer not in self._known:
            raise ValueError(f"data plane: a slab for rank {peer}, which is not one of this torch "
                             f"transport's peers {self.peers}: its close handshake would miss it")
        host, bounce = self._wire_for(raw)
        if bounce is not None:
            bounce.copy_(host, non_blocking=True)  # the NCCL stream waits for this copy
        stream = self._stream("send", peer, tag)
        return TorchTransfer(stream, self.plane.isend(host if bounce is None else bounce, peer, tag, stream),
                             wire_bytes=raw.nbytes)

    def irecv(self, raw: np.ndarray, peer: int, tag: int) -> TorchTransfer:
        host, bounce = self._wire_for(raw)
        stream = self._stream("recv", peer, tag)
        ticket = self.plane.irecv(host if bounce is None else bounce, peer, tag, stream)
        return TorchTransfer(stream, ticket, None if bounce is None else (host, bounce))

    def expected_bytes(self, raw: np.ndarray) -> int:
        return raw.nbytes  # torch p2p moves whole slabs: both sides must post the same size

    def close_sending(self, tag: int, filler: np.ndarray) -> Closing:
        """Match every receive the peers still have posted with `filler` (its bytes are dropped)."""
        comm = self.plane.comm
        counts = {peer: np.zeros(1, dtype=np.int64) for peer in self.peers}
        asking = {peer: comm.Irecv(counts[peer], self.plane.torch_rank(peer), tag) for peer in self.peers}
        fillers: list[TorchTransfer] = []

        def closed() -> bool:
            for peer, request in list(asking.items()):
                if request.Test():
                    del asking[peer]
                    count = int(counts[peer][0])
                    if not 0 <= count <= MAX_POSTED:
                        raise ValueError(f"data plane close: rank {peer} says it has {count} "
                                         f"receives posted for tag {tag}")
                    fillers.extend(self.isend(filler, peer, tag) for _ in range(count))
            return not asking and all(transfer.done() for transfer in fillers)
        return closed

    def close_receiving(self, posted: Sequence[Transfer], peer: int, tag: int) -> Closing:
        """Tell `peer` how many receives are posted; done once its fillers matched them all."""
        count = np.array([len(posted)], dtype=np.int64)
        told = self.plane.comm.Isend(count, self.plane.torch_rank(peer), tag)
        return lambda: bool(told.Test()) and all(transfer.done() for transfer in posted)

    def _wire_for(self, raw: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        key = raw.ctypes.data
        if key not in self._wire:
            if raw.dtype != np.uint8 or raw.ndim != 1 or not raw.flags.c_contiguous:
                raise ValueError("slabs travel as 1-D contiguous uint8 arrays")
            bounce = (DATA_PATH.zeros("pump/device bounce", raw.shape, torch.uint8, self.plane.device)
                      if self._bounce else None)
            self._wire[key] = (raw, torch.from_numpy(raw), bounce)  # raw kept: addresses stay unique
        return self._wire[key][1:]

    def _stream(self, direction: str, peer: int, tag: int) -> WorkStream:
        key = (direction, peer, tag)
        if key not in self._streams:
            self._streams[key] = WorkStream(self.plane, f"pump {direction} rank {peer} tag {tag}")
        return self._streams[key]
