"""Recording lane: writes every Nth trained episode to HDF5, then returns its slot to the pool."""
from __future__ import annotations

import numpy as np

from dvla_hpc.envs.protocol import EnvSpec
from dvla_hpc.lanes.lane import Lane, SlotQueue
from dvla_hpc.memory.layouts import H
from dvla_hpc.memory.slab_pool import SlabPool
from dvla_hpc.output.episode import EpisodeRecord
from dvla_hpc.output.trajectory_writer import TrajectoryWriter


def episode_record(ep: dict, task: str, spec: EnvSpec, action_chunk: int, dones: np.ndarray) -> EpisodeRecord:
    """Views of the slot (written out before the slot is released, so nothing is copied).
    `dones` is the caller's all-False-but-last buffer of the episode's length."""
    header = ep["header"]
    t = int(header[H.COUNT])
    return EpisodeRecord(
        images=ep["image"][:t], proprio=ep["proprio"][:t], actions=ep["action"][:t],
        rewards=ep["reward"][:t], dones=dones, policy_versions=ep["version"][:t],
        action_logp=ep["logp"][:t], env_steps=ep["env_steps"][:t], action_chunk=action_chunk,
        task=task, instruction=spec.instructions[int(header[H.TASK])], success=bool(header[H.SUCCESS]),
        seed=int(header[H.SEED]), cameras=spec.cameras, proprio_keys=spec.proprio_keys)


class RecordLane(Lane):
    def __init__(self, writer: TrajectoryWriter | None, every: int, pool: SlabPool, inbox: SlotQueue,
                 task: str, spec: EnvSpec, action_chunk: int, stop, failed):
        super().__init__("record", stop, failed)
        self.writer, self.every = writer, every
        self.pool, self.inbox = pool, inbox
        self.task, self.spec, self.action_chunk = task, spec, action_chunk
        self.seen = 0
        self.written = 0
        self.dones = np.zeros(pool.layout.fields["reward"].shape[0] + 1, dtype=np.bool_)
        self.dones[-1] = True

    def loop(self) -> None:
        for slot in self.each(self.inbox.get):
            self.handle(slot)
        while (slot := self.inbox.get(timeout=0)) is not None:
            self.handle(slot)

    def handle(self, slot: int) -> None:
        ep = self.pool.slots[slot]
        if self.writer is not None and self.every and self.seen % self.every == 0 \
                and not ep["header"][H.FAILED]:
            t = int(ep["header"][H.COUNT])
            dones = self.dones[len(self.dones) - t:]
            self.writer.write_episode(episode_record(ep, self.task, self.spec, self.action_chunk, dones))
            self.written += 1
        self.seen += 1
        self.items += 1
        self.pool.release(slot)

    def counters(self) -> dict[str, float]:
        return {"written": self.written}

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
