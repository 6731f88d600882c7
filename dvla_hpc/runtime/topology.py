"""Plan the world: which rank takes which role, where it sits, and the communicators it uses."""
from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from typing import Sequence

import numpy as np
from mpi4py import MPI

from dvla_hpc.planes.backoff import wait_requests

ROLES: tuple[str, ...] = ("sim", "infer", "learn")


class LayoutError(ValueError):
    """The requested ranks cannot host the requested roles."""


@dataclass(frozen=True)
class RolePlan:
    roles: tuple[str, ...]  # role of each world rank
    node_of: tuple[int, ...]  # node id of each world rank
    switch_of: tuple[int, ...]  # switch id of each world rank

    def __post_init__(self) -> None:
        n = len(self.roles)
        if len(self.node_of) != n or len(self.switch_of) != n:
            raise LayoutError(
                f"RolePlan needs one role, node and switch per rank: got {n} roles, "
                f"{len(self.node_of)} node ids, {len(self.switch_of)} switch ids")
        unknown = sorted(set(self.roles) - set(ROLES))
        if unknown:
            raise LayoutError(f"unknown role(s) {unknown}: roles are {', '.join(ROLES)}")

    @property
    def world_size(self) -> int:
        return len(self.roles)

    def ranks(self, role: str) -> list[int]:
        if role not in ROLES:
            raise LayoutError(f"unknown role {role!r}: roles are {', '.join(ROLES)}")
        return [r for r, rr in enumerate(self.roles) if rr == role]

    @property
    def learner_root(self) -> int:
        return self.ranks("learn")[0]

    @cached_property
    def infer_for_sim(self) -> dict[int, int]:
        return assign_sims_to_infer(self.roles, self.node_of, self.switch_of)

    def sims_for(self, infer_rank: int) -> list[int]:
        if self.roles[infer_rank] != "infer":
            raise LayoutError(f"rank {infer_rank} has role {self.roles[infer_rank]!r}, not 'infer'")
        return sorted(s for s, i in self.infer_for_sim.items() if i == infer_rank)

    def name(self, rank: int, hosts: Sequence[str]) -> str:
        """How errors name a rank: 'rank 3 (sim) on host node17'."""
        return f"rank {rank} ({self.roles[rank]}) on host {hosts[rank]}"

    def describe(self) -> str:
        counts = ", ".join(f"{len(self.ranks(role))} {role}" for role in ROLES)
        nodes, switches = len(set(self.node_of)), len(set(self.switch_of))
        return (f"{self.world_size} ranks on {nodes} node(s), {switches} switch(es): {counts} "
                f"(learner root = rank {self.learner_root})")


HOSTNAME_BYTES = 64


def gather_hostnames(comm: MPI.Comm) -> tuple[str, ...]:
    """Every rank's host name (MPI's processor name, cut to 64 bytes), without pickle."""
    mine = np.zeros(HOSTNAME_BYTES, dtype=np.uint8)
    name = MPI.Get_processor_name().encode()[:HOSTNAME_BYTES]
    mine[: len(name)] = np.frombuffer(name, dtype=np.uint8)
    every = np.empty((comm.Get_size(), HOSTNAME_BYTES), dtype=np.uint8)
    wait_requests(comm.Iallgather(mine, every), what="host name gather")
    return tuple(bytes(row).rstrip(b"\0").decode(errors="replace") for row in every)


def plan_layout(world_size: int, learn_ranks: int, infer_ranks: int,
                node_of: Sequence[int], switch_of: Sequence[int]) -> RolePlan:
    """Assign roles: learners on the last node(s), infer ranks one per node first, sims elsewhere.

    `infer_ranks=0` means one per node that has room, capped so that every infer rank serves a sim.
    """
    _validate_counts(world_size, learn_ranks, infer_ranks, node_of, switch_of)
    by_node: dict[int, list[int]] = defaultdict(list)
    for rank in range(world_size):
        by_node[node_of[rank]].append(rank)
    by_node_order = [r for node in sorted(by_node) for r in by_node[node]]
    learners = set(by_node_order[world_size - learn_ranks:])

    free_on_node = {node: [r for r in ranks if r not in learners]
                    for node, ranks in by_node.items()}
    if infer_ranks == 0:
        nodes_with_room = sum(1 for ranks in free_on_node.values() if ranks)
        infer_ranks = max(1, min(nodes_with_room, (world_size - learn_ranks) // 2))

    # Round-robin across nodes (one infer per node first); within a round, nodes that keep a sim
    # rank after giving one to infer go first.
    def priority(rank: int) -> tuple[int, int, int]:
        free = free_on_node[node_of[rank]]
        position = free.index(rank)
        return (position, int(position >= len(free) - 1), node_of[rank])

    candidates = sorted((r for r in range(world_size) if r not in learners), key=priority)
    infers = set(candidates[:infer_ranks])
    roles = tuple("learn" if r in learners else "infer" if r in infers else "sim"
                  for r in range(world_size))
    return RolePlan(roles, tuple(int(n) for n in node_of), tuple(int(s) for s in switch_of))


def _validate_counts(world_size: int, learn: int, infer: int,
                     node_of: Sequence[int], switch_of: Sequence[int]) -> None:
    if world_size == 1:
        raise LayoutError(
            "plan_layout needs at least 3 ranks: with 1 rank dvla_hpc runs every lane as a thread "
            "in one process (single-process mode), chosen automatically - do not call plan_layout")
    if world_size < 1:
        raise LayoutError(f"world_size must be at least 1, got {world_size}")
    if len(node_of) != world_size or len(switch_of) != world_size:
        raise LayoutError(
            f"need one node id and one switch id per rank: {world_size} ranks but "
            f"{len(node_of)} node ids and {len(switch_of)} switch ids")
    if learn < 1:
        raise LayoutError(f"learn_ranks must be at least 1 (got {learn}): the learner needs a rank")
    if infer < 0:
        raise LayoutError(f"infer_ranks must be >= 0 (0 = one per node), got {infer}")
    if world_size < learn + 2:
        raise LayoutError(
            f"{world_size} ranks cannot host the 3 roles sim, infer, learn with {learn} learn "
            f"rank(s): run with at least {learn + 2} ranks (mpiexec -n {learn + 2}), lower "
            f"learn_ranks, or use 1 rank for single-process mode")
    sims = world_size - learn - infer
    if infer > 0 and sims < 1:
        raise LayoutError(
            f"{world_size} ranks cannot host {learn} learn + {infer} infer rank(s) and still leave "
            f"a sim rank: lower infer_ranks to at most {(world_size - learn) // 2} or add ranks")
    if infer > sims:
        raise LayoutError(
            f"{infer} infer ranks but only {sims} sim rank(s): every infer rank must serve at "
            f"least one sim rank; lower infer_ranks to at most {(world_size - learn) // 2} "
            f"or add ranks")
    switch_of_node: dict[int, int] = {}
    for rank in range(world_size):
        seen = switch_of_node.setdefault(node_of[rank], switch_of[rank])
        if seen != switch_of[rank]:
            raise LayoutError(
                f"node {node_of[rank]} appears on switches {seen} and {switch_of[rank]}: "
                f"every rank of a node must report the same switch")


def assign_sims_to_infer(roles: Sequence[str], node_of: Sequence[int],
                         switch_of: Sequence[int]) -> dict[int, int]:
    """Serve each sim by one infer rank: same node first, least loaded next, none left idle."""
    infers = [r for r, role in enumerate(roles) if role == "infer"]
    sims = [r for r, role in enumerate(roles) if role == "sim"]
    if not infers or len(sims) < len(infers):
        raise LayoutError(f"{len(infers)} infer rank(s) cannot each serve one of {len(sims)} sims")
    infers_on_node: dict[int, list[int]] = defaultdict(list)
    for i in infers:
        infers_on_node[node_of[i]].append(i)
    load = {i: 0 for i in infers}
    server: dict[int, int] = {}
    for sim in sims:
        pool = infers_on_node.get(node_of[sim]) or infers
        best = min(pool, key=lambda i: (load[i], switch_of[i] != switch_of[sim], i))
        server[sim] = best
        load[best] += 1
    for idle in (i for i in infers if load[i] == 0):
        busiest = max(infers, key=lambda i: (load[i], -i))
        moved = max(s for s, i in server.items() if i == busiest)
        server[moved] = idle
        load[busiest] -= 1
        load[idle] += 1
    return server


def slurm_switch_name(address: str | None) -> str:
    """Leaf switch path from SLURM_TOPOLOGY_ADDR ('s0.s1.node7' -> 's0.s1'); '' when unknown."""
    if not address or "." not in address:
        return ""
    return address.rsplit(".", 1)[0]


def detect_placement(comm: MPI.Comm, ranks_per_node: int = 0,
                     nodes_per_switch: int = 0) -> tuple[list[int], list[int]]:
    """Node and switch id of every rank of `comm` (collective). Ids are dense, in rank order.

    `ranks_per_node` / `nodes_per_switch` > 0 emulate nodes and switches on one machine.
    """
    if ranks_per_node < 0 or nodes_per_switch < 0:
        raise LayoutError("ranks_per_node and nodes_per_switch must be >= 0 (0 = detect)")
    if ranks_per_node > 0:
        node_of = [r // ranks_per_node for r in range(comm.Get_size())]
    else:
        shared = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
        try:
            leader = np.array([comm.Get_rank() if shared.Get_rank() == 0 else -1], dtype=np.int64)
            shared_leader = np.empty(1, dtype=np.int64)
            wait_requests(shared.Iallreduce(leader, shared_leader, op=MPI.MAX))
        finally:
            shared.Free()
        node_of = _dense(_allgather_int(comm, int(shared_leader[0])))
    if nodes_per_switch > 0:
        switch_of = [node // nodes_per_switch for node in node_of]
    else:
        name = slurm_switch_name(os.environ.get("SLURM_TOPOLOGY_ADDR"))
        key = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=7).digest(), "little")
        switch_of = _dense(_allgather_int(comm, key))
    return node_of, switch_of


def _allgather_int(comm: MPI.Comm, value: int) -> list[int]:
    mine = np.array([value], dtype=np.int64)
    everyone = np.empty(comm.Get_size(), dtype=np.int64)
    wait_requests(comm.Iallgather(mine, everyone))
    return [int(v) for v in everyone]


def _dense(keys: Sequence[int]) -> list[int]:
    ids: dict[int, int] = {}
    return [ids.setdefault(k, len(ids)) for k in keys]


@dataclass
class Communicators:
    world: MPI.Comm
    control: MPI.Comm  # small control messages only
    data: MPI.Comm  # tensor payloads
    role: MPI.Comm  # ranks sharing this rank's role
    distribution: MPI.Comm  # learner root (rank 0) + infer ranks; COMM_NULL elsewhere
    distribution_world_ranks: list[int] = field(default_factory=list)

    def free(self) -> None:
        for name in ("control", "data", "role", "distribution"):
            comm = getattr(self, name)
            if comm != MPI.COMM_NULL:
                comm.Free()
                setattr(self, name, MPI.COMM_NULL)


def build_communicators(world: MPI.Comm, plan: RolePlan) -> Communicators:
    """Collective over `world`: duplicate control/data comms, split role and distribution comms."""
    if world.Get_size() != plan.world_size:
        raise LayoutError(f"plan is for {plan.world_size} ranks but the communicator has "
                          f"{world.Get_size()}: plan with the communicator's size")
    rank = world.Get_rank()
    my_role = plan.roles[rank]
    control = world.Dup()
    data = world.Dup()
    role = world.Split(color=ROLES.index(my_role), key=rank)
    members = [plan.learner_root] + plan.ranks("infer")
    in_distribution = rank in members
    distribution = world.Split(color=0 if in_distribution else MPI.UNDEFINED,
                               key=members.index(rank) if in_distribution else 0)
    if in_distribution and distribution.Get_rank() != members.index(rank):
        raise RuntimeError(f"distribution comm rank {distribution.Get_rank()} for world rank "
                           f"{rank}, expected {members.index(rank)}")
    return Communicators(world, control, data, role, distribution, members)
