"""Topology-aware broadcast: plan root -> switch leaders -> node leaders -> members, then move one
flat buffer down those links in chunks, forwarding each chunk as soon as it lands."""
from __future__ import annotations

import zlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from mpi4py import MPI

from dvla_hpc.planes.backoff import wait_requests
from dvla_hpc.planes.tree_header import HEADER_FIELDS, BroadcastError, check_header, write_header

IdMap = Mapping[int, int] | Sequence[int]


@dataclass(frozen=True)
class TreeLinks:
    parent: int | None  # None at the root
    children: tuple[int, ...] = ()  # deeper subtrees first, so they start forwarding early


def plan_tree(members: Sequence[int], root: int, node_of: IdMap, switch_of: IdMap,
              max_fanout: int) -> dict[int, TreeLinks]:
    """Links for every member. Each switch and node receives one copy of the bytes.

    A level wider than `max_fanout` (0 = unlimited) is split into a k-ary tree among its leaders.
    """
    ids = sorted(set(members))
    if len(ids) != len(members):
        raise ValueError(f"members must be unique, got {len(members)} ids with {len(ids)} distinct")
    if root not in ids:
        raise ValueError(f"root {root} is not one of the members {ids}")
    if max_fanout < 0:
        raise ValueError(f"max_fanout must be >= 0 (0 = unlimited), got {max_fanout}")
    layout: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for m in ids:
        layout[switch_of[m]][node_of[m]].append(m)

    parent: dict[int, int | None] = {root: None}
    children: dict[int, list[int]] = {m: [] for m in ids}

    def attach(up: int, kids: list[int]) -> None:
        for i, kid in enumerate(kids):
            via = up if max_fanout == 0 or i < max_fanout else kids[(i - max_fanout) // max_fanout]
            parent[kid] = via
            children[via].append(kid)

    def lowest(nodes: Mapping[int, list[int]]) -> int:
        return min(ms[0] for ms in nodes.values())

    switch_leader = {sw: root if sw == switch_of[root] else lowest(nodes)
                     for sw, nodes in layout.items()}
    attach(root, [switch_leader[sw] for sw in sorted(layout) if sw != switch_of[root]])
    for sw in sorted(layout):
        nodes, sl = layout[sw], switch_leader[sw]
        node_leader = {nd: sl if nd == node_of[sl] else ms[0] for nd, ms in nodes.items()}
        attach(sl, [node_leader[nd] for nd in sorted(nodes) if nd != node_of[sl]])
        for nd in sorted(nodes):
            attach(node_leader[nd], [m for m in nodes[nd] if m != node_leader[nd]])
    return {m: TreeLinks(parent[m], tuple(children[m])) for m in ids}


def count_crossings(tree: Mapping[int, TreeLinks], switch_of: IdMap,
                    node_of: IdMap) -> dict[str, int]:
    """Edges, switch/node crossings (a switch crossing is also a node crossing), depth, fan-out."""
    edges = [(links.parent, m) for m, links in tree.items() if links.parent is not None]
    depth: dict[int, int] = {}

    def depth_of(m: int) -> int:
        if m not in depth:
            up = tree[m].parent
            depth[m] = 0 if up is None else depth_of(up) + 1
        return depth[m]

    return {
        "edges": len(edges),
        "switch_crossings": sum(switch_of[p] != switch_of[c] for p, c in edges),
        "node_crossings": sum((switch_of[p], node_of[p]) != (switch_of[c], node_of[c])
                              for p, c in edges),
        "depth": max((depth_of(m) for m in tree), default=0),
        "max_fanout": max((len(links.children) for links in tree.values()), default=0),
    }


@dataclass
class _BufferRequests:
    """Persistent requests bound to one target buffer: started anew for every version."""
    array: np.ndarray
    chunks: list[np.ndarray]  # uint8 views, one per chunk
    recvs: list[MPI.Prequest]  # one per chunk, from the parent (empty at the root)
    sends_by_chunk: list[list[MPI.Prequest]]  # per chunk, one per child
    all_sends: list[MPI.Request]  # header sends + every chunk send, for Testall


class TreeBroadcast:
    """Moves the root's buffer to every member along `links`; driven by polling `progress()`.

    Root: `start(version)` then `progress()` until True. Others: `post_receive()` then
    `progress()` until it returns the version (received, checked and forwarded). The buffer
    must not change at the root, or be read by others, while a version is in flight.
    """

    def __init__(self, comm: MPI.Comm, links: TreeLinks, buffer: np.ndarray,
                 chunk_bytes: int = 1 << 20, tag_base: int = 100, verify_crc: bool = True) -> None:
        size = comm.Get_size()
        for peer in ([links.parent] if links.parent is not None else []) + list(links.children):
            if not 0 <= peer < size or peer == comm.Get_rank():
                raise ValueError(f"tree link to rank {peer} is invalid in a comm of size {size} "
                                 f"(this rank is {comm.Get_rank()})")
        if chunk_bytes <= 0:
            raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
        tag_ub = comm.Get_attr(MPI.TAG_UB)
        if not 0 <= tag_base < tag_ub:
            raise ValueError(f"tag_base {tag_base} outside MPI's tag range [0, {tag_ub})")
        self._comm, self._links = comm, links
        self._chunk_bytes, self._verify = chunk_bytes, verify_crc
        self._header_tag, self._chunk_tag = tag_base, tag_base + 1
        self._nbytes = self._check_buffer(buffer, None)
        self._n_chunks = -(-self._nbytes // chunk_bytes)
        self._header_in = np.zeros(HEADER_FIELDS, dtype=np.int64)
        self._header_out = np.zeros(HEADER_FIELDS, dtype=np.int64)
        self._status = MPI.Status()
        self._header_recv = (None if links.parent is None else
                             comm.Recv_init(self._header_in, links.parent, self._header_tag))
        self._header_sends = [comm.Send_init(self._header_out, child, self._header_tag)
                              for child in links.children]
        self._by_buffer: dict[int, _BufferRequests] = {}
        self._target = self._requests_for(buffer)
        self._state = "idle"  # idle -> (header -> chunks ->) forwarding -> idle; closed
        self._next_chunk, self._crc, self._version = 0, 0, -1

    @property
    def is_root(self) -> bool:
        return self._links.parent is None

    @property
    def in_flight(self) -> bool:
        """A version is being received or forwarded (stopping now would strand the children)."""
        return self._state in ("chunks", "forwarding")

    def start(self, version: int, source: np.ndarray | None = None) -> None:
        """Root: begin sending `source` (default: the constructor's buffer) as `version`."""
        if not self.is_root:
            raise RuntimeError("start() is for the root; other members call post_receive()")
        self._require_idle("start")
        if source is not None:
            self._target = self._requests_for(source)
        crc = zlib.crc32(self._target.array.view(np.uint8)) if self._verify else 0
        write_header(self._header_out, version, self._nbytes, self._n_chunks, self._chunk_bytes, crc)
        MPI.Prequest.Startall(self._header_sends)
        for sends in self._target.sends_by_chunk:
            MPI.Prequest.Startall(sends)
        self._version, self._state = version, "forwarding"

    def post_receive(self, into: np.ndarray | None = None) -> None:
        """Non-root: pre-post the header receive; the payload lands in `into` (default: buffer)."""
        if self._header_recv is None:
            raise RuntimeError("post_receive() is for non-root members; the root calls start()")
        self._require_idle("post_receive")
        if into is not None:
            self._target = self._requests_for(into)
        self._header_recv.Start()
        self._state = "header"

    def progress(self) -> bool | int | None:
        """Root: True once every send is done. Others: the version once it arrived and was
        forwarded, else None. Raises BroadcastError when the header or payload is invalid."""
        if self._state == "header" and self._test(self._header_recv, "header"):
            self._accept_header()
        if self._state == "chunks":
            self._receive_ready_chunks()
        if self._state == "forwarding" and MPI.Request.Testall(self._target.all_sends):
            self._state = "idle"
            return True if self.is_root else self._version
        if self.is_root:
            return self._state == "idle"
        return None

    def cancel(self, timeout_s: float = 2.0) -> bool:
        """Shutdown: cancel posted receives, wait up to `timeout_s` for started sends, free the
        requests. Returns False if some send never completed (a peer stopped receiving)."""
        if self._state == "closed":
            return True
        pending: list[MPI.Request] = list(self._target.all_sends)
        if self._header_recv is not None:
            pending.append(self._header_recv)
        pending.extend(self._target.recvs)
        if self._state == "header":
            self._header_recv.Cancel()
        elif self._state == "chunks":
            for request in self._target.recvs[self._next_chunk:]:
                request.Cancel()
        try:
            wait_requests(*pending, timeout_s=timeout_s, what="the weight tree's sends at shutdown")
        except TimeoutError:
            self._state = "closed"
            return False
        for request in self._header_sends + ([self._header_recv] if self._header_recv else []):
            request.Free()
        for bound in self._by_buffer.values():
            for request in bound.all_sends[len(self._header_sends):] + bound.recvs:
                request.Free()
        self._by_buffer.clear()
        self._state = "closed"
        return True

    def _receive_ready_chunks(self) -> None:
        target = self._target
        while self._next_chunk < self._n_chunks:
            k = self._next_chunk
            if not self._test(target.recvs[k], f"chunk {k}"):
                return
            expected = target.chunks[k].nbytes
            got = self._status.Get_count(MPI.BYTE)
            if got != expected:
                raise BroadcastError(f"chunk {k} of version {self._version} from rank "
                                     f"{self._links.parent} has {got} bytes, expected {expected}")
            if self._verify:
                self._crc = zlib.crc32(target.chunks[k], self._crc)
            MPI.Prequest.Startall(target.sends_by_chunk[k])
            self._next_chunk += 1
        if self._verify and self._crc != int(self._header_in[5]):
            raise BroadcastError(
                f"payload of version {self._version} from rank {self._links.parent} fails its "
                f"CRC32 check (got {self._crc:#010x}, header says {int(self._header_in[5]):#010x})")
        self._state = "forwarding"

    def _accept_header(self) -> None:
        h, parent = self._header_in, self._links.parent
        where = f"broadcast header from rank {parent} (tag {self._header_tag})"
        count = self._status.Get_count(MPI.INT64_T)
        if count != HEADER_FIELDS:
            raise BroadcastError(f"{where} has {count} int64 fields, expected {HEADER_FIELDS}")
        version = check_header(h, where, self._nbytes, self._n_chunks, self._chunk_bytes)
        self._version, self._next_chunk, self._crc = version, 0, 0
        self._header_out[:] = h
        MPI.Prequest.Startall(self._target.recvs)
        MPI.Prequest.Startall(self._header_sends)
        self._state = "chunks"

    def _test(self, request: MPI.Prequest, what: str) -> bool:
        try:
            return request.Test(self._status)
        except MPI.Exception as error:
            raise BroadcastError(f"receiving {what} from rank {self._links.parent} failed "
                                 f"(wrong message size?): {error}") from error

    def _require_idle(self, action: str) -> None:
        if self._state != "idle":
            raise RuntimeError(f"{action}() while a broadcast is {self._state}: "
                               f"drive progress() to completion first")

    def _check_buffer(self, buffer: np.ndarray, nbytes: int | None) -> int:
        if not isinstance(buffer, np.ndarray) or buffer.ndim != 1 or not buffer.flags.c_contiguous:
            raise ValueError("broadcast buffer must be a 1-D C-contiguous numpy array")
        if buffer.nbytes == 0 or (nbytes is not None and buffer.nbytes != nbytes):
            raise ValueError(f"broadcast buffer holds {buffer.nbytes} bytes, expected "
                             f"{nbytes if nbytes is not None else 'a positive number'}")
        return buffer.nbytes

    def _requests_for(self, buffer: np.ndarray) -> _BufferRequests:
        self._check_buffer(buffer, self._nbytes)
        key = buffer.ctypes.data  # the requests keep their buffer alive, so addresses are unique
        if key in self._by_buffer:
            return self._by_buffer[key]
        raw = buffer.view(np.uint8)
        cb = self._chunk_bytes
        chunks = [raw[k * cb:(k + 1) * cb] for k in range(self._n_chunks)]
        comm, links = self._comm, self._links
        recvs = ([] if links.parent is None else
                 [comm.Recv_init(c, links.parent, self._chunk_tag) for c in chunks])
        sends = [[comm.Send_init(c, child, self._chunk_tag) for child in links.children]
                 for c in chunks]
        all_sends: list[MPI.Request] = list(self._header_sends)
        for per_chunk in sends:
            all_sends.extend(per_chunk)
        self._by_buffer[key] = _BufferRequests(buffer, chunks, recvs, sends, all_sends)
        return self._by_buffer[key]
