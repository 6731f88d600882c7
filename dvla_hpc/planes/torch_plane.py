"""The torch.distributed data plane: process groups built from the MPI plan (gloo for CPU tensors,
NCCL for CUDA tensors, the same code), and polling of point-to-point works without blocking.

What torch 2.13 does, found by experiment (gloo) and from its sources (NCCL):
- A gloo send/recv Work never says is_completed() until someone calls wait(), and has no future.
  So on gloo a daemon thread per `WorkStream` waits on the stream's works in posting order and
  callers poll the count it has completed; NCCL works answer is_completed() themselves.
- A posted gloo recv cannot be cancelled: ProcessGroup.abort()/shutdown() are no-ops for gloo,
  destroy_process_group() leaves it posted, and only data or its timeout wakes a wait() on it.
  Posted-but-unwaited recvs are harmless at exit, but a thread still blocked in wait() when the
  interpreter exits aborts the process ("terminate called without an active exception").
  Hence the rule of this plane: every posted receive is matched before the groups go. The pump's
  flows and the broadcast tree close with handshakes that match them (transport.py,
  torch_tree.py), and shutdown() matches whatever is left with fillers.
- NCCL runs the p2p works of one pair of ranks in posting order on one stream, and fails a work
  that is older than the group's timeout: a posted receive may wait at most `timeout`.

torch.distributed is imported inside the functions, so ranks outside the plane never load it
through this module (plain `import torch` loads the package, but nothing is initialised)."""
from __future__ import annotations

import hashlib
import queue
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Sequence

import numpy as np
import torch
from mpi4py import MPI

from dvla_hpc.planes.backoff import Backoff, wait_requests

DEFAULT_TIMEOUT_S = 3600.0
HOST_BYTES = 256


class TorchPlaneError(RuntimeError):
    """A torch.distributed operation of the data plane failed."""


WORLD, DISTRIBUTION, LEARNERS = 0, 1, 2  # group ids for TorchPlane.isend/irecv


@dataclass
class TorchPlane:
    backend: str  # "gloo" or "nccl"
    device: torch.device  # where carried tensors live
    members: list[int]  # MPI world ranks in the torch world, in torch-rank order
    distribution: Any | None  # ProcessGroup of the distribution members, None if not one of them
    learners: Any | None  # ProcessGroup of the learner ranks, None if not a learner
    comm: MPI.Comm = field(default_factory=lambda: MPI.COMM_NULL, repr=False)  # the members, torch order
    timeout: timedelta = field(default=timedelta(seconds=DEFAULT_TIMEOUT_S), repr=False)
    streams: list[WorkStream] = field(default_factory=list, repr=False)
    closed: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        import torch.distributed as dist

        self._dist = dist
        self._torch_ranks = {world_rank: i for i, world_rank in enumerate(self.members)}
        self._groups = (None, self.distribution, self.learners)
        self._posted: dict[tuple[str, int, int, int], int] = {}  # (op, torch peer, group, tag) -> count
        self._lock = threading.Lock()

    def torch_rank(self, world_rank: int) -> int:
        if world_rank not in self._torch_ranks:
            raise ValueError(f"world rank {world_rank} is not in the torch plane (members {self.members})")
        return self._torch_ranks[world_rank]

    @property
    def rank(self) -> int:
        """This member's torch rank."""
        return self.comm.Get_rank()

    def isend(self, tensor: torch.Tensor, peer: int, tag: int, stream: WorkStream,
              group: int = WORLD) -> int:
        """Send to world rank `peer` within group WORLD, DISTRIBUTION or LEARNERS; a ticket of
        `stream`. Every p2p work of the plane goes through here or irecv (shutdown counts them)."""
        return self._post("send", tensor, peer, tag, stream, group)

    def irecv(self, tensor: torch.Tensor, peer: int, tag: int, stream: WorkStream,
              group: int = WORLD) -> int:
        return self._post("recv", tensor, peer, tag, stream, group)

    def shutdown(self, timeout_s: float = 300.0) -> None:
        """Collective over the members (each waits up to `timeout_s` for the others). Matches the
        receives still posted anywhere (see `_match_posted_receives`), waits for every tracked
        work, stops the waiter threads and destroys the process groups. Never hangs: what is still
        pending at the deadline (a member that never came, a send nobody receives) is reported on
        stderr, and left."""
        if self.closed:
            return
        self.closed = True
        deadline = time.monotonic() + timeout_s
        problems = []
        exchanged = True
        try:
            if self.backend == "gloo":
                self._match_posted_receives(deadline)
        except TimeoutError as err:
            problems.append(str(err))
            exchanged = False
        backoff = Backoff()
        while any(stream.waiting for stream in self.streams) and time.monotonic() < deadline:
            backoff.idle()
        problems += [f"{s.name} ({s.pending} pending)" for s in self.streams if s.waiting]
        for stream in self.streams:
            stream.close()
        if problems:
            sys.stderr.write(f"torch plane (rank {self.rank}): shutting down with works that were "
                             f"never matched: {'; '.join(problems)}\n")
        if problems and self.backend == "nccl":  # destroying would wait for them; aborting does not
            self._dist.distributed_c10d._abort_process_group()
        else:  # gloo: abort()/shutdown() are no-ops; destroy returns at once, even over posted recvs
            self._dist.destroy_process_group()
        if exchanged:  # else a collective is still pending on it: freeing it could hang finalize
            self.comm.Free()

    def _post(self, op: str, tensor: torch.Tensor, peer: int, tag: int, stream: WorkStream,
              group: int) -> int:
        torch_peer = self.torch_rank(peer)
        if self._groups[group] is None and group != WORLD:
            raise ValueError(f"rank {self.members[self.rank]} is not in torch plane group {group}")
        if op == "send":
            work = self._dist.isend(tensor, dst=torch_peer, group=self._groups[group], tag=tag)
        else:
            work = self._dist.irecv(tensor, src=torch_peer, group=self._groups[group], tag=tag)
        key = (op, torch_peer, group, tag)
        with self._lock:
            self._posted[key] = self._posted.get(key, 0) + 1
        return stream.add(work)

    def _match_posted_receives(self, deadline: float) -> None:
        """gloo cannot cancel a posted receive, and a thread waiting on one when the interpreter
        exits aborts the process. So every member tells each source how many receives it posted
        per (group, tag); the source adds 1-byte fillers for those it never sent (gloo accepts a
        shorter message into a longer receive; the filler's byte is dropped with the buffer)."""
        size = self.comm.Get_size()
        wanted: list[list[int]] = [[] for _ in range(size)]
        for (op, peer, group, tag), count in sorted(self._posted.items()):
            if op == "recv":
                wanted[peer] += [group, tag, count]
        counts = np.array([len(w) for w in wanted], dtype=np.int32)
        their_counts = np.empty(size, dtype=np.int32)
        remaining = max(deadline - time.monotonic(), 0.0)
        wait_requests(self.comm.Ialltoall(counts, their_counts), timeout_s=remaining,
                      what="torch plane shutdown: exchange of posted receive counts")
        mine = np.array([v for w in wanted for v in w], dtype=np.int64)
        theirs = np.empty(int(their_counts.sum()), dtype=np.int64)
        offsets = [np.concatenate(([0], np.cumsum(c)[:-1])).astype(np.int32) for c in (counts, their_counts)]
        remaining = max(deadline - time.monotonic(), 0.0)
        wait_requests(self.comm.Ialltoallv([mine, (counts, offsets[0]), MPI.INT64_T],
                                           [theirs, (their_counts, offsets[1]), MPI.INT64_T]),
                      timeout_s=remaining, what="torch plane shutdown: exchange of posted receives")
        filler = torch.zeros(1, dtype=torch.uint8, device=self.device)
        fillers = WorkStream(self, "shutdown fillers")
        at = 0
        for peer in range(size):
            for _ in range(int(their_counts[peer]) // 3):
                group, tag, received = (int(v) for v in theirs[at:at + 3])
                at += 3
                missing = received - self._posted.get(("send", peer, group, tag), 0)
                for _ in range(max(missing, 0)):
                    self.isend(filler, self.members[peer], tag, fillers, group)


class WorkStream:
    """Works that complete in posting order (one peer and direction, or any set whose order the
    caller controls), polled without blocking. `add` returns a ticket; `done(ticket)` says whether
    that work and every earlier one have completed."""

    def __init__(self, plane: TorchPlane, name: str):
        self.name = name
        self.timeout = plane.timeout
        self.posted = 0
        self.completed = 0
        self.error: BaseException | None = None
        self._polled = plane.backend == "nccl"
        self._works: list[Any] = []  # nccl: works not yet seen completed, oldest first
        self._queue: queue.SimpleQueue | None = None  # gloo: works for the waiter thread
        self._thread: threading.Thread | None = None
        plane.streams.append(self)

    @property
    def pending(self) -> int:
        return self.posted - self.completed

    @property
    def waiting(self) -> bool:
        """Some work is neither completed nor failed."""
        return self.error is None and not self.idle(raise_error=False)

    def add(self, work: Any) -> int:
        ticket = self.posted
        self.posted += 1
        if self._polled:
            self._works.append(work)
        else:
            if self._thread is None:
                self._queue = queue.SimpleQueue()
                self._thread = threading.Thread(target=self._wait_in_order, name=f"wait {self.name}",
                                                daemon=True)
                self._thread.start()
            self._queue.put(work)
        return ticket

    def done(self, ticket: int) -> bool:
        return ticket < self._completed_now(raise_error=True)

    def idle(self, raise_error: bool = True) -> bool:
        return self._completed_now(raise_error) == self.posted

    def close(self, timeout_s: float = 1.0) -> None:
        """Stop the waiter thread once it has waited on what it holds (joined when it is idle,
        so that the last works are released here and not while the interpreter exits)."""
        if self._thread is not None:
            self._queue.put(None)
            if not self.waiting:
                self._thread.join(timeout_s)
            self._thread = None

    def _completed_now(self, raise_error: bool) -> int:
        if self.error is not None and raise_error:
            raise TorchPlaneError(f"{self.name}: {self.error}") from self.error
        if self._polled:
            finished = 0
            for work in self._works:
                if not work.is_completed():
                    break
                finished += 1
            if finished:
                del self._works[:finished]
                self.completed += finished
        return self.completed

    def _wait_in_order(self) -> None:
        while (work := self._queue.get()) is not None:
            try:
                if not work.wait(self.timeout):
                    raise TorchPlaneError("the work was aborted")
            except BaseException as err:  # noqa: BLE001 - handed to the polling thread
                self.error = err
                return
            self.completed += 1


def init_torch_plane(world: MPI.Comm, members: Sequence[int], distribution: Sequence[int],
                     learners: Sequence[int], device: torch.device,
                     timeout_s: float = DEFAULT_TIMEOUT_S) -> TorchPlane | None:
    """Collective over `world`. Members join one torch world (torch rank = position in `members`)
    and get the distribution and learner subgroups; other ranks get None and leave
    torch.distributed untouched. `timeout_s` bounds the rendezvous, every collective, and how long
    a posted receive may wait."""
    members, distribution, learners = list(members), list(distribution), list(learners)
    _check_lists(world.Get_size(), members, distribution, learners)
    rank = world.Get_rank()
    inside = rank in members
    comm = world.Split(0 if inside else MPI.UNDEFINED, members.index(rank) if inside else 0)
    if not inside:
        return None
    import torch.distributed as dist

    timeout = timedelta(seconds=timeout_s)
    store = _rendezvous_store(comm, timeout)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # No device_id: with an eagerly initialised NCCL communicator every p2p work of the group
    # would share one stream, and a pre-posted receive would hold up all the others.
    hook = sys.excepthook
    dist.init_process_group(backend, store=store, rank=comm.Get_rank(), world_size=len(members),
                            timeout=timeout)
    # torch wraps the hook to prefix tracebacks with the rank, writing them only after the old
    # hook returns; a hook that aborts the MPI job (invariant 4) would then never show the error.
    sys.excepthook = hook
    groups = [dist.new_group([members.index(r) for r in ranks], timeout=timeout)
              for ranks in (distribution, learners)]
    mine = [group if rank in ranks else None for group, ranks in zip(groups, (distribution, learners))]
    return TorchPlane(backend, device, members, mine[0], mine[1], comm, timeout)


def _check_lists(world_size: int, members: list[int], distribution: list[int],
                 learners: list[int]) -> None:
    if len(set(members)) != len(members) or not members:
        raise ValueError(f"torch plane members must be distinct world ranks, got {members}")
    if not all(0 <= r < world_size for r in members):
        raise ValueError(f"torch plane members {members} outside the world of {world_size} ranks")
    for name, ranks in (("distribution", distribution), ("learner", learners)):
        outside = sorted(set(ranks) - set(members))
        if outside or len(set(ranks)) != len(ranks) or not ranks:
            raise ValueError(f"{name} ranks {ranks} must be distinct torch plane members "
                             f"(members {members}; not members: {outside})")


def _rendezvous_store(comm: MPI.Comm, timeout: timedelta) -> Any:
    """torch's rendezvous store: the first member serves it on a port the OS picks as it binds
    (no window in which another process can take a port chosen beforehand) and shares its
    reachable address and that port over MPI; the others connect to it."""
    import torch.distributed as dist

    timeout_s = timeout.total_seconds()
    name = socket.gethostname()
    mine = np.array([int.from_bytes(hashlib.blake2b(name.encode(), digest_size=7).digest(), "little")],
                    dtype=np.int64)
    hosts = np.empty(comm.Get_size(), dtype=np.int64)
    wait_requests(comm.Iallgather(mine, hosts), timeout_s=timeout_s, what="torch plane host gather")
    address = np.zeros(HOST_BYTES + 8, dtype=np.uint8)
    store = None
    if comm.Get_rank() == 0:
        host = "127.0.0.1" if len(set(hosts.tolist())) == 1 else _reachable_host(name)
        encoded = host.encode()
        if len(encoded) > HOST_BYTES:
            raise ValueError(f"rendezvous host name {host!r} is longer than {HOST_BYTES} bytes")
        store = dist.TCPStore(host, 0, comm.Get_size(), True, timeout, wait_for_workers=False)
        address[:len(encoded)] = np.frombuffer(encoded, dtype=np.uint8)
        address[HOST_BYTES:].view(np.int64)[0] = store.port
    wait_requests(comm.Ibcast(address, root=0), timeout_s=timeout_s, what="torch plane address")
    if store is None:
        host = bytes(address[:HOST_BYTES]).rstrip(b"\0").decode()
        store = dist.TCPStore(host, int(address[HOST_BYTES:].view(np.int64)[0]), comm.Get_size(), False,
                              timeout)
    return store


def _reachable_host(name: str) -> str:
    """This host's address as other hosts see it; the name itself when it resolves to loopback."""
    try:
        address = socket.gethostbyname(name)
    except OSError:
        return name
    return name if address.startswith("127.") else address
