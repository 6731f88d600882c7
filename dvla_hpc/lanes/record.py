"""Recording lane: writes every Nth trained episode to HDF5, then returns its slot to the pool."""
from __future__ import annotations

import numpy as np

from dvla_hpc.lanes.lane import Lane, SlotQueue
from dvla_hpc.memory.layouts import H
from dvla_hpc.memory.slab_pool import SlabPool
from dvla_hpc.output.episode import EpisodeRecord
from dvla_hpc.output.trajectory_writer import TrajectoryWriter


def episode_record(ep: dict, task: str, instructions: tuple[str, ...]) -> EpisodeRecord:
    header = ep["header"]
    t = int(header[H.COUNT])
    dones = np.zeros(t, dtype=np.bool_)
    dones[-1] = True
    return EpisodeRecord(
        images=ep["image"][:t].copy(), proprio=ep["proprio"][:t].copy(), actions=ep["action"][:t].copy(),
        rewards=ep["reward"][:t].copy(), dones=dones, policy_versions=ep["version"][:t].copy(),
        task=task, instruction=instructions[int(header[H.TASK])], success=bool(header[H.SUCCESS]),
        seed=int(header[H.SEED]))


class RecordLane(Lane):
    def __init__(self, writer: TrajectoryWriter | None, every: int, pool: SlabPool, inbox: SlotQueue,
                 task: str, instructions: tuple[str, ...], stop, failed):
        super().__init__("record", stop, failed)
        self.writer, self.every = writer, every
        self.pool, self.inbox = pool, inbox
        self.task, self.instructions = task, instructions
        self.seen = 0
        self.written = 0

    def loop(self) -> None:
        for slot in self.each(self.inbox.get):
            self.handle(slot)
        while (slot := self.inbox.get(timeout=0)) is not None:
            self.handle(slot)

    def handle(self, slot: int) -> None:
        ep = self.pool.slots[slot]
        if self.writer is not None and self.every and self.seen % self.every == 0 \
                and not ep["header"][H.FAILED]:
            self.writer.write_episode(episode_record(ep, self.task, self.instructions))
            self.written += 1
        self.seen += 1
        self.items += 1
        self.pool.release(slot)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
