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
    """Serves observation slabs in as few policy calls as the weights and `stager.max_envs`
    allow: every slab queued when a call starts joins it while its envs fit, so an infer rank
    that serves many samplers acts on batches as large as their slabs arrive together."""

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
        # On a GPU the lane's kernels go on a stream of their own, at high priority: in one
        # process the learner shares the GPU, and on the default stream every policy call would
        # queue behind the update's kernels.
        self.stream = torch.cuda.Stream(weights.device, priority=-1) if weights.device.type == "cuda" else None
        self.swaps = 0
        self.episodes = 0
        self.observations = 0  # env observations acted on: one per env step, or per chunk of k
        self.policy_calls = 0
        self.base_version = -1  # the version that served round 0
        self.backlog: list[int] = []  # observation slots taken from obs_in, not yet served

    def counters(self) -> dict[str, float]:
        return {"weight_swaps": self.swaps, "episodes": self.episodes, "observations": self.observations,
                "policy_calls": self.policy_calls}

    def loop(self) -> None:
        while not self.stop.is_set():
            if not self.serve_backlog():
                return
            with self.waiting():
                slot = self.obs_in.get(0.005 if self.backlog else 0.05)
            if slot is not None:
                self.backlog.append(slot)

    def serve(self, slot: int) -> bool:
        """Serve one slab (and whatever else is queued)."""
        self.backlog.append(slot)
        return self.serve_backlog()

    def serve_backlog(self) -> bool:
        """Policy calls for the backlog and everything queued, until what is left must wait for
        weights new enough for its round. False once the run stops mid-way."""
        while (slot := self.obs_in.get_nowait()) is not None:
            self.backlog.append(slot)
        with torch.cuda.stream(self.stream):  # None on the CPU: a no-op
            while self.backlog:
                picked = self.pick()
                if picked is None:
                    return True
                if not self.act_on(*picked):
                    return False
        return True

    def pick(self) -> tuple[torch.nn.Module, int, list[int]] | None:
        """The active policy and the oldest backlog slabs it may serve in one call: slabs of rounds
        it is new enough for (sync mode trains one version per round, async mode stays in round 0;
        under MPI nothing is served before the first version has come down the tree), while their
        envs fit the stager. None if no slab may be served yet."""
        if self.weights.swap_if_staged():
            self.swaps += 1
        model, version = self.weights.active_model()
        if version < 0:
            return None
        picked, envs = [], 0
        for slot in self.backlog:
            header = self.obs_pool.slots[slot]["header"]
            round_, n = int(header[H.ROUND]), int(header[H.COUNT])
            if self.base_version < 0:
                self.base_version = version - round_
            if version >= self.base_version + round_ and envs + n <= self.stager.max_envs:
                picked.append(slot)
                envs += n
        if not picked:
            return None
        self.backlog = [slot for slot in self.backlog if slot not in picked]
        return model, version, picked

    def act_on(self, model: torch.nn.Module, version: int, slots: list[int]) -> bool:
        """One policy call for the slabs (checked where they entered: the data pump, or our own
        sampler): every slab's actions go out first, then each step joins its episode."""
        slabs = [self.obs_pool.slots[slot] for slot in slots]
        counts = [int(obs["header"][H.COUNT]) for obs in slabs]
        with self.copying():
            for obs in slabs:
                sampler = int(obs["header"][H.SAMPLER])
                self.episodes += self.assembler.close_finished(sampler, obs, self.episode_out, self.stop)
            batch = self.stager.stage(slabs, counts)
        with autocast(self.weights.device, self.bf16):
            tokens, logp = model.act(batch, self.generator)
        tokens, logp = tokens.cpu(), logp.cpu()  # no-ops on the CPU; small device-to-host copies on a GPU
        actions = self.bins.to_actions(tokens).numpy()
        tokens, logp = tokens.numpy(), logp.numpy()
        self.policy_calls += 1
        offsets = np.cumsum([0, *counts])
        for obs, n, start in zip(slabs, counts, offsets):
            if not self.answer(obs, actions[start:start + n]):
                return False
        for slot, obs, n, start in zip(slots, slabs, counts, offsets):
            rows = slice(start, start + n)
            with self.copying():
                ok = self.assembler.record_step(int(obs["header"][H.SAMPLER]), obs, tokens[rows],
                                                logp[rows], actions[rows], version, self)
            if not ok:
                return False
            self.obs_pool.release(slot)
            self.observations += n
            self.items += 1
        return True

    def answer(self, obs: dict, actions: np.ndarray) -> bool:
        """An action slab for the observation slab's sampler and half."""
        out = self.acquire_slot(self.action_pool)
        if out is None:
            return False
        header = self.action_pool.slots[out]["header"]
        stamp(header, SlabKind.ACTIONS)
        header[H.SAMPLER], header[H.HALF] = obs["header"][H.SAMPLER], obs["header"][H.HALF]
        header[H.COUNT] = len(actions)
        self.action_pool.slots[out]["action"][:len(actions)] = actions
        with self.waiting():
            return self.action_out.put(out, self.stop)
