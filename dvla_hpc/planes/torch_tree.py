"""The topology-aware broadcast tree over torch.distributed p2p (NCCL on GPUs, gloo on CPUs):
the protocol of broadcast_tree.TreeBroadcast on flat tensors of the plane's device. A checked
int64 header precedes the chunks; each chunk goes on to the children as soon as it lands.

A posted torch receive cannot be cancelled (see torch_plane.py), so `cancel()` is a handshake:
the root sends a CLOSE header down the tree, and every member waits for it (taking in a version
that was already on its way) before it returns. Every member of the tree must call cancel()."""
from __future__ import annotations

import time
from typing import Sequence

import torch

from dvla_hpc.planes.backoff import Backoff
from dvla_hpc.planes.broadcast_tree import TreeLinks
from dvla_hpc.planes.tree_header import HEADER_FIELDS, check_header, write_header
from dvla_hpc.planes.torch_plane import DISTRIBUTION, TorchPlane, WorkStream

CLOSE = -1  # the version a CLOSE header carries


class TorchTreeBroadcast:
    """Moves the root's buffer to every member along `links` (ranks of the distribution group,
    0 = learner root; `group_ranks[i]` is member i's world rank); driven by polling `progress()`.

    Root: `start(version)` then `progress()` until True. Others: `post_receive()` then
    `progress()` until it returns the version (received and forwarded). The buffer must not
    change at the root, or be read by others, while a version is in flight."""

    def __init__(self, plane: TorchPlane, group_ranks: Sequence[int], links: TreeLinks,
                 buffer: torch.Tensor, chunk_bytes: int, tag_base: int = 300) -> None:
        if plane.distribution is None:
            raise ValueError(f"world rank {plane.members[plane.rank]} is not in the distribution "
                             f"group, so it has no place in the broadcast tree")
        mine = plane.members[plane.rank]
        if mine not in group_ranks:
            raise ValueError(f"world rank {mine} is not one of the tree's members {list(group_ranks)}")
        me = list(group_ranks).index(mine)
        peers = ([links.parent] if links.parent is not None else []) + list(links.children)
        for peer in peers:
            if not 0 <= peer < len(group_ranks) or peer == me:
                raise ValueError(f"tree link to member {peer} is invalid in a group of "
                                 f"{len(group_ranks)} (this member is {me})")
        if chunk_bytes <= 0:
            raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
        self._plane, self._device = plane, plane.device
        self._links, self._chunk_bytes = links, chunk_bytes
        self._world_rank = {peer: group_ranks[peer] for peer in peers}
        self._header_tag, self._chunk_tag = tag_base, tag_base + 1
        self._nbytes = self._check_buffer(buffer, None)
        self._n_chunks = -(-self._nbytes // chunk_bytes)
        self._header_in = torch.zeros(HEADER_FIELDS, dtype=torch.int64, device=plane.device)
        self._header_out = torch.zeros(HEADER_FIELDS, dtype=torch.int64, device=plane.device)
        self._header_host = torch.zeros(HEADER_FIELDS, dtype=torch.int64)
        self._receives = WorkStream(plane, f"tree receives from member {links.parent}")
        self._sends = WorkStream(plane, f"tree sends to members {list(links.children)}")
        self._chunks_by_buffer: dict[int, tuple[torch.Tensor, list[torch.Tensor]]] = {}
        self._target = self._chunks_for(buffer)
        self._state = "idle"  # idle -> (header -> chunks ->) forwarding -> idle; closing; closed
        self._header_ticket = self._first_chunk_ticket = -1
        self._next_chunk, self._version = 0, -1

    @property
    def is_root(self) -> bool:
        return self._links.parent is None

    @property
    def in_flight(self) -> bool:
        """A version is being received or forwarded (stopping now would strand the children)."""
        return self._state in ("chunks", "forwarding")

    def start(self, version: int, source: torch.Tensor | None = None) -> None:
        """Root: begin sending `source` (default: the constructor's buffer) as `version`."""
        if not self.is_root:
            raise RuntimeError("start() is for the root; other members call post_receive()")
        if version < 0:
            raise ValueError(f"versions are >= 0, got {version}")
        self._require_idle("start")
        if source is not None:
            self._target = self._chunks_for(source)
        self._send_header(version)
        for chunk in self._target:
            for child in self._links.children:
                self._send(chunk, child, self._chunk_tag)
        self._version, self._state = version, "forwarding"

    def post_receive(self, into: torch.Tensor | None = None) -> None:
        """Non-root: pre-post the header receive; the payload lands in `into` (default: buffer)."""
        if self.is_root:
            raise RuntimeError("post_receive() is for non-root members; the root calls start()")
        self._require_idle("post_receive")
        if into is not None:
            self._target = self._chunks_for(into)
        self._header_ticket = self._receive(self._header_in, self._header_tag)
        self._state = "header"

    def progress(self) -> bool | int | None:
        """Root: True once every send is done. Others: the version once it arrived and was
        forwarded, else None. Raises BroadcastError when a header is invalid."""
        if self._state == "header" and self._receives.done(self._header_ticket):
            self._accept_header()
        if self._state == "chunks":
            self._forward_ready_chunks()
        if self._state == "forwarding" and self._sends.idle():
            self._state = "idle"
            return True if self.is_root else self._version
        if self.is_root:
            return self._state == "idle"
        return None

    def cancel(self, timeout_s: float = 2.0) -> bool:
        """Shutdown handshake: the root finishes its version in flight and sends CLOSE; the others
        take in what is on its way (into the last buffer they were given) until CLOSE arrives, and
        pass it on. False if that did not happen within `timeout_s` (call again to keep waiting);
        the plane's shutdown reports what was left."""
        if self._state == "closed":
            return True
        backoff, deadline = Backoff(), time.monotonic() + timeout_s
        while self._state != "closing":
            if self.is_root and self._state == "idle":
                self._send_header(CLOSE)
                self._state = "closing"
                break
            if self._state == "idle":
                self.post_receive()
            self.progress()
            if self._state != "closing":
                if time.monotonic() > deadline:
                    return False
                backoff.idle()
        while not self._sends.idle():
            if time.monotonic() > deadline:
                return False
            backoff.idle()
        self._receives.close()
        self._sends.close()
        self._state = "closed"
        return True

    def _accept_header(self) -> None:
        self._header_host.copy_(self._header_in)
        h = self._header_host.numpy()
        where = f"broadcast header from member {self._links.parent} (tag {self._header_tag})"
        version = check_header(h, where, self._nbytes, self._n_chunks, self._chunk_bytes, CLOSE)
        for child in self._links.children:
            self._send(self._header_in, child, self._header_tag)
        if version == CLOSE:
            self._state = "closing"
            return
        self._first_chunk_ticket = self._receives.posted
        for chunk in self._target:
            self._receive(chunk, self._chunk_tag)
        self._version, self._next_chunk, self._state = version, 0, "chunks"

    def _forward_ready_chunks(self) -> None:
        while (self._next_chunk < self._n_chunks
               and self._receives.done(self._first_chunk_ticket + self._next_chunk)):
            for child in self._links.children:
                self._send(self._target[self._next_chunk], child, self._chunk_tag)
            self._next_chunk += 1
        if self._next_chunk == self._n_chunks:
            self._state = "forwarding"

    def _send_header(self, version: int) -> None:
        write_header(self._header_host.numpy(), version, self._nbytes, self._n_chunks, self._chunk_bytes)
        self._header_out.copy_(self._header_host)
        for child in self._links.children:
            self._send(self._header_out, child, self._header_tag)

    def _send(self, tensor: torch.Tensor, child: int, tag: int) -> int:
        return self._plane.isend(tensor, self._world_rank[child], tag, self._sends, DISTRIBUTION)

    def _receive(self, tensor: torch.Tensor, tag: int) -> int:
        return self._plane.irecv(tensor, self._world_rank[self._links.parent], tag, self._receives,
                                 DISTRIBUTION)

    def _require_idle(self, action: str) -> None:
        if self._state != "idle":
            raise RuntimeError(f"{action}() while the broadcast is {self._state}"
                               + ("" if self._state in ("closing", "closed") else
                                  ": drive progress() to completion first"))

    def _check_buffer(self, buffer: torch.Tensor, nbytes: int | None) -> int:
        if not isinstance(buffer, torch.Tensor) or buffer.dim() != 1 or not buffer.is_contiguous():
            raise ValueError("broadcast buffer must be a 1-D contiguous torch tensor")
        if buffer.device != self._device:
            raise ValueError(f"broadcast buffer is on {buffer.device}, the plane carries tensors "
                             f"on {self._device}")
        size = buffer.numel() * buffer.element_size()
        if size == 0 or (nbytes is not None and size != nbytes):
            raise ValueError(f"broadcast buffer holds {size} bytes, expected "
                             f"{nbytes if nbytes is not None else 'a positive number'}")
        return size

    def _chunks_for(self, buffer: torch.Tensor) -> list[torch.Tensor]:
        self._check_buffer(buffer, self._nbytes)
        key = buffer.data_ptr()  # the cache keeps the buffer alive, so addresses stay unique
        if key not in self._chunks_by_buffer:
            raw, cb = buffer.view(torch.uint8), self._chunk_bytes
            self._chunks_by_buffer[key] = (buffer, [raw[k * cb:(k + 1) * cb]
                                                    for k in range(self._n_chunks)])
        return self._chunks_by_buffer[key][1]
