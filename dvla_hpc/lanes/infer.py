"""Inference lane: batches observations, runs the active policy, returns actions and assembles
episodes in which every step carries the policy version that produced it."""
from __future__ import annotations

import numpy as np
import torch

from dvla_hpc.lanes.lane import Lane, SlotQueue
from dvla_hpc.memory.layouts import H, PARKED, SlabKind, stamp
from dvla_hpc.memory.slab_pool import SlabPool
from dvla_hpc.memory.static_pool import DoubleBufferedWeights
from dvla_hpc.lanes.batch_stager import BatchStager
from dvla_hpc.model.tokens import ActionBins
from dvla_hpc.runtime.devices import autocast


class EpisodeAssembler:
    """Open episodes keyed by (sampler, env); each lives in one slot of the episode pool. A slab's
    rows land in their episodes' slots in one indexed copy per field (the pool's `fields`)."""

    def __init__(self, pool: SlabPool, max_steps: int):
        self.pool = pool
        self.max_steps = max_steps
        self.open: dict[tuple[int, int], int] = {}
        self.next_episode_id = 0
        self.fields = pool.fields

    def open_rows(self, sampler: int, obs: dict) -> tuple[np.ndarray, np.ndarray]:
        """(rows of the slab, their episodes' slots) for the slab's envs that have an open episode."""
        rows, slots = [], []
        for j, env in enumerate(obs["env_ids"][: int(obs["header"][H.COUNT])].tolist()):
            slot = self.open.get((sampler, env))
            if slot is not None:
                rows.append(j)
                slots.append(slot)
        return np.array(rows, dtype=np.int64), np.array(slots, dtype=np.int64)

    def close_finished(self, sampler: int, obs: dict, out: SlotQueue, stop) -> int:
        """Book the reward (and simulator steps) of each env's last step; hand finished episodes
        to the learner."""
        rows, slots = self.open_rows(sampler, obs)
        if not len(rows):
            return 0
        f = self.fields
        last = f["header"][slots, H.COUNT] - 1
        f["reward"][slots, last] = obs["reward"][rows]
        f["env_steps"][slots, last] = obs["env_steps"][rows]
        f["header"][slots, H.ENV_STEPS] += obs["env_steps"][rows]
        done = obs["done"][rows]
        overrun = ~done & (last + 1 == self.max_steps)
        if overrun.any():
            env = int(obs["env_ids"][rows[overrun][0]])
            raise RuntimeError(f"env {(sampler, env)} ran past its step limit {self.max_steps} without done")
        for j, slot in zip(rows[done].tolist(), slots[done].tolist()):
            header = f["header"][slot]
            header[H.SUCCESS] = int(obs["success"][j])
            header[H.FAILED] = int(obs["failed"][j])
            del self.open[(sampler, int(obs["env_ids"][j]))]
            out.put(slot, stop)
        return int(done.sum())

    def record_step(self, sampler: int, obs: dict, tokens: np.ndarray, logp: np.ndarray,
                    actions: np.ndarray, version: int, lane: Lane) -> bool:
        for j, env in enumerate(obs["env_ids"][: int(obs["header"][H.COUNT])].tolist()):
            if (sampler, env) not in self.open and obs["group"][j] != PARKED:
                slot = lane.acquire_slot(self.pool)
                if slot is None:
                    return False
                self.start(slot, sampler, obs, j)
                self.open[(sampler, env)] = slot
        rows, slots = self.open_rows(sampler, obs)
        f = self.fields
        t = f["header"][slots, H.COUNT]
        f["image"][slots, t] = obs["image"][rows]
        f["proprio"][slots, t] = obs["proprio"][rows]
        f["tokens"][slots, t] = tokens[rows]
        f["logp"][slots, t] = logp[rows]
        f["action"][slots, t] = actions[rows]
        f["reward"][slots, t] = 0.0
        f["version"][slots, t] = version
        f["header"][slots, H.COUNT] = t + 1
        return True

    def start(self, slot: int, sampler: int, obs: dict, j: int) -> None:
        header = self.pool.slots[slot]["header"]
        header[:] = 0
        stamp(header, SlabKind.EPISODE)
        header[H.SAMPLER] = sampler
        header[H.ENV] = obs["env_ids"][j]
        header[H.TASK] = obs["task"][j]
        header[H.GROUP] = obs["group"][j]
        header[H.SEED] = obs["seed"][j]
        header[H.EPISODE_ID] = self.next_episode_id
        self.next_episode_id += 1


class InferLane(Lane):
    def __init__(self, weights: DoubleBufferedWeights, stager: BatchStager, bins: ActionBins,
                 obs_pool: SlabPool, obs_in: SlotQueue, action_pool: SlabPool, action_out: SlotQueue,
                 assembler: EpisodeAssembler, episode_out: SlotQueue, seed: int, stop, failed,
                 bf16: bool = False, name: str = "infer"):
        super().__init__(name, stop, failed)
        self.weights = weights
        self.stager = stager
        self.bf16 = bf16
        self.bins = bins
        self.obs_pool, self.obs_in = obs_pool, obs_in
        self.action_pool, self.action_out = action_pool, action_out
        self.assembler = assembler
        self.episode_out = episode_out
        self.generator = torch.Generator(weights.device).manual_seed(seed)
        self.swaps = 0
        self.episodes = 0
        self.observations = 0  # env observations acted on: one per env step, or per chunk of k
        self.base_version = -1  # the version that served round 0
        self.held: list[int] = []  # observation slots waiting for newer weights

    def counters(self) -> dict[str, float]:
        return {"weight_swaps": self.swaps, "episodes": self.episodes, "observations": self.observations}

    def loop(self) -> None:
        while not self.stop.is_set():
            if self.held and not self.serve_held():
                return
            with self.waiting():
                slot = self.obs_in.get(0.005 if self.held else 0.05)
            if slot is not None and not self.serve(slot):
                return

    def ready_policy(self, round_: int):
        """The active policy if it may serve the sampler's round, else None. Sync mode trains one
        version per round (async mode stays in round 0); in MPI mode nothing is served before the
        first version has come down the tree."""
        if self.weights.swap_if_staged():
            self.swaps += 1
        model, version = self.weights.active_model()
        if version < 0:
            return None
        if self.base_version < 0:
            self.base_version = version - round_
        return (model, version) if version >= self.base_version + round_ else None

    def serve_held(self) -> bool:
        held, self.held = self.held, []
        return all(self.serve(slot) for slot in held)

    def serve(self, slot: int) -> bool:
        """Act on one observation slab, or hold it (without blocking the other samplers' slabs)
        until weights new enough for its round have arrived."""
        obs = self.obs_pool.slots[slot]  # checked where it entered: the data pump, or our own sampler
        policy = self.ready_policy(int(obs["header"][H.ROUND]))
        if policy is None:
            self.held.append(slot)
            return True
        model, version = policy
        sampler, half, n = (int(obs["header"][w]) for w in (H.SAMPLER, H.HALF, H.COUNT))
        with self.copying():
            self.episodes += self.assembler.close_finished(sampler, obs, self.episode_out, self.stop)
            batch = self.stager.stage(obs, n)
        with autocast(self.weights.device, self.bf16):
            tokens, logp = model.act(batch, self.generator)
        tokens, logp = tokens.cpu(), logp.cpu()  # no-ops on the CPU; small device-to-host copies on a GPU
        actions = self.bins.to_actions(tokens)
        out = self.acquire_slot(self.action_pool)
        if out is None:
            return False
        view = self.action_pool.slots[out]
        stamp(view["header"], SlabKind.ACTIONS)
        view["header"][H.SAMPLER], view["header"][H.HALF], view["header"][H.COUNT] = sampler, half, n
        view["action"][:n] = actions.numpy()
        with self.waiting():
            if not self.action_out.put(out, self.stop):
                return False
        with self.copying():
            ok = self.assembler.record_step(sampler, obs, tokens.numpy(), logp.numpy(), actions.numpy(),
                                            version, self)
        self.obs_pool.release(slot)
        self.observations += n
        self.items += 1
        return ok
