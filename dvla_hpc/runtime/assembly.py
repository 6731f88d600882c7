"""One place builds each role's lanes, whatever carries their slabs.

A role's lanes talk to the outside through ports: slab pools plus the slot queues they hand ids
through. In single-process mode the three roles share one set of ports (in-process channels);
in MPI mode each rank makes its own and the data pump connects them to its peers' (roles/*.py).
The lanes, the learner and the weight holder are built here and nowhere else. The builders of
the infer and learn side import their torch modules themselves, so a sim rank imports no torch."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from dvla_hpc.lanes.flow_credit import FlowCredit
from dvla_hpc.lanes.lane import Lane, SlotQueue
from dvla_hpc.lanes.learn import CheckpointSchedule, LearnLane
from dvla_hpc.lanes.record import RecordLane
from dvla_hpc.lanes.sample import FlowControl, GroupSchedule, SampleLane
from dvla_hpc.memory.slab_pool import SlabPool
from dvla_hpc.output.trajectory_writer import TrajectoryWriter
from dvla_hpc.runtime.blueprint import Blueprint, env_kwargs, make_vector_env

if TYPE_CHECKING:
    import torch

    from dvla_hpc.learn.learner import GRPOLearner
    from dvla_hpc.learn.replicas import LearnerReplicas
    from dvla_hpc.memory.static_pool import DoubleBufferedWeights


@dataclass
class Signals:
    """Shared by every lane of a process: `stop` ends them, `failed` says one of them broke."""
    stop: threading.Event
    failed: threading.Event

    @classmethod
    def new(cls) -> "Signals":
        return cls(threading.Event(), threading.Event())


@dataclass
class SimPorts:
    obs_pool: SlabPool
    obs_out: SlotQueue
    action_pool: SlabPool
    action_in: SlotQueue


@dataclass
class InferPorts:
    obs_pool: SlabPool
    obs_in: SlotQueue
    action_pool: SlabPool
    action_out: SlotQueue
    episode_pool: SlabPool
    episode_out: SlotQueue


@dataclass
class LearnPorts:
    episode_pool: SlabPool
    episode_in: SlotQueue


def sim_ports(bp: Blueprint) -> SimPorts:
    return SimPorts(SlabPool(bp.obs_layout, 3), SlotQueue(3, "observations"),
                    SlabPool(bp.action_layout, 3), SlotQueue(3, "actions", wakeable=True))


def infer_ports(bp: Blueprint, samplers: int) -> InferPorts:
    obs = SlabPool(bp.obs_layout, 3 * samplers)
    actions = SlabPool(bp.action_layout, 2 * samplers + 1)
    episodes = SlabPool(bp.episode_layout, bp.infer_episode_slots(samplers))
    return InferPorts(obs, SlotQueue(obs.count, "observations"), actions, SlotQueue(actions.count, "actions"),
                      episodes, SlotQueue(episodes.count, "episodes"))


def learn_ports(bp: Blueprint, samplers: int) -> LearnPorts:
    pool = SlabPool(bp.episode_layout, bp.learner_episode_slots(samplers))
    return LearnPorts(pool, SlotQueue(pool.count, "episodes"))


def local_ports(bp: Blueprint) -> tuple[SimPorts, InferPorts, LearnPorts]:
    """Single process: the sampler's outbox is the infer lane's inbox, the infer lane's episode
    outbox the learner's inbox, and all three share the pools."""
    sim = sim_ports(bp)
    episodes = SlabPool(bp.episode_layout, bp.learner_episode_slots(1) + bp.infer_episode_slots(1))
    episode_q = SlotQueue(episodes.count, "episodes")
    infer = InferPorts(sim.obs_pool, sim.obs_out, sim.action_pool, sim.action_in, episodes, episode_q)
    return sim, infer, LearnPorts(episodes, episode_q)


def flow_controlled(bp: Blueprint) -> bool:
    """Async flow control is on (not in sync mode, nor with pipeline.flow_versions_ahead=0)."""
    return bp.cfg.run.mode != "sync" and bp.cfg.pipeline.flow_versions_ahead > 0


def flow_control(bp: Blueprint) -> FlowControl | None:
    """A sampler's side of async flow control."""
    return FlowControl() if flow_controlled(bp) else None


def flow_credit(bp: Blueprint, sampler_ids: list[int], learners: int) -> FlowCredit | None:
    """The learner root's side of async flow control: the groups it grants each sampler."""
    if not flow_controlled(bp):
        return None
    cfg = bp.cfg
    return FlowCredit(sampler_ids, cfg.learn.groups_per_update, learners, cfg.pipeline.flow_versions_ahead)


def sim_lanes(bp: Blueprint, sampler_id: int, samplers: int, ports: SimPorts, sig: Signals,
              flow: FlowControl | None) -> list[Lane]:
    cfg = bp.cfg
    return [SampleLane(sampler_id, lambda: make_vector_env(cfg), cfg.env.envs_per_sampler,
                       GroupSchedule(cfg.run.seed, sampler_id, cfg.learn.group_size),
                       bp.episode_budget(samplers), ports.obs_pool, ports.obs_out,
                       ports.action_pool, ports.action_in, sig.stop, sig.failed, flow)]


def weight_holder(bp: Blueprint, device: torch.device, initial_version: int) -> DoubleBufferedWeights:
    from dvla_hpc.memory.static_pool import DoubleBufferedWeights
    return DoubleBufferedWeights(bp.make_policy, initial_version, device)


def infer_lanes(bp: Blueprint, holder: DoubleBufferedWeights, ports: InferPorts, seed: int,
                sig: Signals) -> list[Lane]:
    """The infer lane; the lane that fills the holder's staging buffer belongs to whoever
    delivers weights (the learner in one process, the broadcast tree under MPI)."""
    from dvla_hpc.lanes.batch_stager import BatchStager
    from dvla_hpc.lanes.infer import EpisodeAssembler, InferLane
    from dvla_hpc.runtime.devices import uses_bf16
    cfg, spec = bp.cfg, bp.spec
    stager = BatchStager(bp.infer_batch, spec.frames_shape, spec.proprio_dim, bp.instruction_tokens,
                         holder.device)
    return [InferLane(holder, stager, bp.bins, ports.obs_pool, ports.obs_in, ports.action_pool,
                      ports.action_out, EpisodeAssembler(ports.episode_pool, spec.max_episode_steps),
                      ports.episode_out, seed, sig.stop, sig.failed,
                      bf16=uses_bf16(holder.device, cfg.run))]


def build_learner(bp: Blueprint, device: torch.device,
                  replicas: LearnerReplicas | None = None) -> GRPOLearner:
    from dvla_hpc.learn.learner import GRPOLearner
    from dvla_hpc.runtime.devices import uses_bf16
    cfg = bp.cfg
    return GRPOLearner(cfg.learn, bp.initial_policy(), bp.instruction_tokens, bp.spec, cfg.run.seed,
                       device, uses_bf16(device, cfg.run), replicas, cfg.model.action_chunk)


def trajectory_writer(bp: Blueprint, directory: Path, rank: int) -> TrajectoryWriter | None:
    """This learner rank's HDF5 writer (None: output.record_every=0)."""
    cfg = bp.cfg
    if not cfg.output.record_every:
        return None
    return TrajectoryWriter(directory, rank, cfg.env.name, cfg.output.episodes_per_shard, env_kwargs(cfg),
                            bp.spec.instructions)


@dataclass
class LearnerLanes:
    learn: LearnLane
    record: RecordLane
    distribute: Lane | None  # the root's publishing lane; None on other replicas

    @property
    def all(self) -> list[Lane]:
        return [lane for lane in (self.learn, self.distribute, self.record) if lane is not None]


def learn_lanes(bp: Blueprint, learner: GRPOLearner, ports: LearnPorts, sig: Signals,
                log_metrics: Callable[[dict], None], writer: TrajectoryWriter | None, sampler_ids: list[int],
                publish: Callable[[int, np.ndarray], None] | None = None, distribute: Lane | None = None,
                checkpoint: Callable[[], None] | None = None) -> LearnerLanes:
    cfg = bp.cfg
    retired = SlotQueue(ports.episode_pool.count, "retired episodes")
    learn = LearnLane(learner, ports.episode_pool, ports.episode_in, publish,
                      lambda slot: retired.put(slot, sig.stop), log_metrics, cfg.learn, sig.stop, sig.failed,
                      sampler_ids, checkpoint,
                      CheckpointSchedule(cfg.run.checkpoint_every_updates, cfg.run.checkpoint_every_s))
    record = RecordLane(writer, cfg.output.record_every, ports.episode_pool, retired, cfg.env.name,
                        bp.spec, cfg.model.action_chunk, sig.stop, sig.failed)
    return LearnerLanes(learn, record, distribute)
