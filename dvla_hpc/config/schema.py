"""The one typed configuration schema. YAML files and `key=value` overrides fill it in."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


def bounds(low: float | None = None, high: float | None = None, doc: str = "") -> dict:
    return {"low": low, "high": high, "doc": doc}


@dataclass
class RunConfig:
    name: str = "quickstart"
    seed: int = field(default=0, metadata=bounds(0))
    mode: Literal["async", "sync"] = field(default="async", metadata=bounds(
        doc="async overlaps all lanes; sync runs them one after another (roll out, train, sync weights)"))
    total_env_steps: int = field(default=60_000, metadata=bounds(1))
    wall_clock_limit_s: float = field(default=0.0, metadata=bounds(0, doc="0 = no limit"))
    stop_at_success: float = field(default=0.0, metadata=bounds(
        0.0, 1.0, doc="end the run once the last 100 episodes succeed at this rate; 0 = never"))
    out: str = field(default="", metadata=bounds(doc="run directory; empty = runs/<name>-<time>"))
    device: Literal["auto", "cpu", "cuda"] = field(default="auto", metadata=bounds(
        doc="where infer and learner ranks compute; auto = cuda when available (sim ranks: cpu always)"))
    autocast_bf16: bool = field(default=True, metadata=bounds(
        doc="forward passes under bf16 autocast where the device supports it"))
    cpu_bf16: bool = field(default=False, metadata=bounds(doc=(
        "bf16 autocast on CPU infer and learner ranks too; needs bf16 instructions (AVX512-BF16, "
        "AMX). The conv encoder trains a third cheaper so; film_keypoints runs slower")))
    torch_threads: int = field(default=1, metadata=bounds(1))
    progress_bar: bool = True
    metrics_every_s: float = field(default=5.0, metadata=bounds(0.1))
    checkpoint_every_updates: int = field(default=0, metadata=bounds(0, doc="0 = only at the end"))
    checkpoint_every_s: float = field(default=600.0, metadata=bounds(
        0, doc="also checkpoint once this many seconds passed since the last one; 0 = never by time"))
    checkpoint_keep: int = field(default=3, metadata=bounds(0, doc="newest checkpoints kept; 0 = all"))
    heartbeat_timeout_s: float = field(default=60.0, metadata=bounds(0, doc=(
        "MPI: a rank silent this long ends the job, naming it (rank, role, host); 0 = never")))
    resume: str = field(default="", metadata=bounds(doc="checkpoint file or run directory to resume"))
    init_from: str = field(default="", metadata=bounds(doc=(
        "checkpoint file, or run or SFT directory, whose weights start the run: version 0, a fresh "
        "optimiser, counters at 0 (unlike run.resume)")))


@dataclass
class EnvConfig:
    name: str = "tabletop_reach"
    image_size: int = field(default=64, metadata=bounds(16, 512))
    max_episode_steps: int = field(default=0, metadata=bounds(
        0, doc="0 = the task's own cap (tabletop 25, gymnasium 50, LIBERO the suite's)"))
    envs_per_sampler: int = field(default=16, metadata=bounds(1))
    workers_per_sampler: int = field(default=2, metadata=bounds(0, doc="0 = step envs in the sampler itself"))
    worker_nice: int = field(default=10, metadata=bounds(0, 19, doc=(
        "niceness added to env worker processes: where cores are short, the infer and learn lanes "
        "(the consumers flow control waits on) run first; 0 = the sampler's own")))
    step_timeout_s: float = field(default=30.0, metadata=bounds(0.1))
    shaped_reward: bool = True
    fault: Literal["none", "crash", "hang", "slow", "raise", "nan", "shape"] = field(
        default="none", metadata=bounds(doc="fault injection; needs env.name=debug_faulty"))
    fault_step: int = field(default=1, metadata=bounds(0))
    fault_rate: float = field(default=1.0, metadata=bounds(0.0, 1.0, doc="share of episodes that fault"))
    gym_id: str = field(
        default="Reacher-v5", metadata=bounds(doc="gymnasium id; used when env.name=gymnasium"))
    observation: Literal["pixels", "state"] = field(
        default="pixels", metadata=bounds(doc="gymnasium inputs: rendered pixels or the state vector"))
    suite: Literal["spatial", "object", "goal", "10", "90"] = field(
        default="spatial", metadata=bounds(doc="LIBERO suite; used when env.name=libero"))
    tasks: str = field(default="", metadata=bounds(
        doc="LIBERO task ids, comma-separated (e.g. 0,3); empty = every task of the suite"))
    cameras: str = field(default="agentview,wrist", metadata=bounds(
        doc="LIBERO cameras, comma-separated: agentview, wrist"))
    fast_render: bool = field(default=False, metadata=bounds(
        doc="LIBERO: no shadows or multisampling; faster on CPUs, departs from the standard look"))


@dataclass
class ModelConfig:
    preset: Literal["tiny", "small", "base", "1b", "7b"] = field(default="tiny", metadata=bounds(
        doc="size preset (model/presets.py): sets width, depth, heads, ff_mult, encoder_channels; "
            "keys given explicitly win; tiny = these defaults"))
    encoder: Literal["film_keypoints", "conv"] = field(default="film_keypoints", metadata=bounds(
        doc="film_keypoints: pixel-level FiLM + keypoints; conv: strided conv stack (cheap)"))
    patch_size: int = field(default=8, metadata=bounds(
        1, doc="film_keypoints: each image token covers patch_size^2 pixels"))
    encoder_channels: int = field(default=16, metadata=bounds(1))
    width: int = field(default=64, metadata=bounds(8))
    depth: int = field(default=2, metadata=bounds(1))
    heads: int = field(default=4, metadata=bounds(1))
    ff_mult: int = field(default=2, metadata=bounds(
        1, doc="transformer feed-forward width = ff_mult * width"))
    action_bins: int = field(default=11, metadata=bounds(2, 1024))
    vocab_size: int = field(default=256, metadata=bounds(8))
    max_instruction_tokens: int = field(default=8, metadata=bounds(1))
    action_chunk: int = field(default=1, metadata=bounds(1, 64, doc=(
        "actions predicted per inference call and executed open-loop; inference runs once every "
        "action_chunk env steps")))


@dataclass
class LearnConfig:
    advantage: Literal["outcome", "process"] = "outcome"
    gamma: float = field(default=1.0, metadata=bounds(0.0, 1.0, doc="discount of process advantages"))
    group_size: int = field(default=8, metadata=bounds(2))
    groups_per_update: int = field(default=2, metadata=bounds(1))
    epochs: int = field(default=2, metadata=bounds(1))
    minibatch_size: int = field(default=200, metadata=bounds(1))
    lr: float = field(default=3e-4, metadata=bounds(0.0))
    clip_ratio: float = field(default=0.2, metadata=bounds(0.0, 1.0))
    entropy_coef: float = field(default=0.0, metadata=bounds(0.0))
    max_grad_norm: float = field(default=1.0, metadata=bounds(0.0))
    max_policy_lag: int = field(default=4, metadata=bounds(0))
    clip_against: Literal["behaviour", "proximal"] = field(default="behaviour", metadata=bounds(doc=(
        "proximal: clip the ratio against the policy as it stood when the update began (log-probs "
        "recomputed once per update) and weight each token by its capped behaviour ratio, the "
        "decoupled PPO objective for stale samples; behaviour: clip against the policy that acted")))
    behaviour_ratio_cap: float = field(default=2.0, metadata=bounds(1.0, doc=(
        "clip_against=proximal: the cap on pi_proximal / pi_behaviour, a token's importance weight")))
    publish_every: int = field(default=1, metadata=bounds(1))
    allreduce_bucket_mib: float = field(default=25.0, metadata=bounds(
        0.01, doc="data-parallel learners: gradient allreduce bucket size"))
    check_replicas: bool = field(default=True, metadata=bounds(
        doc="data-parallel learners: compare a checksum of every learner's weights after each update"))


@dataclass
class LayoutConfig:
    learn_ranks: int = field(default=1, metadata=bounds(1))
    infer_ranks: int = field(default=1, metadata=bounds(0, doc="0 = one per node"))
    ranks_per_node: int = field(default=0, metadata=bounds(0, doc="0 = detect; >0 emulates nodes"))
    nodes_per_switch: int = field(default=0, metadata=bounds(0, doc="0 = detect; >0 emulates switches"))
    broadcast_chunk_kib: int = field(default=256, metadata=bounds(1))
    tree_fanout: int = field(default=2, metadata=bounds(0, doc=(
        "children per holder in the weight tree (wider levels become k-ary trees); a parent sends "
        "each chunk once per child, so fewer children pipeline faster; 0 = unlimited")))


@dataclass
class PlanesConfig:
    data_backend: Literal["auto", "mpi", "torch"] = field(default="auto", metadata=bounds(
        doc="data plane between infer and learner ranks: mpi4py buffers, or torch.distributed "
            "(NCCL for CUDA tensors, gloo for CPU tensors); auto = torch on cuda, else mpi"))


@dataclass
class PipelineConfig:
    queue_depth: int = field(default=4, metadata=bounds(
        1, doc="spare episode slots beyond what the envs and groups need"))
    episode_slots: int = field(default=0, metadata=bounds(
        0, doc="learner episode pool size; 0 = sized from envs and groups"))
    poll_max_sleep_ms: float = field(default=2.0, metadata=bounds(0.01, doc=(
        "the data pump's longest sleep between polls of its MPI transfers")))
    poll_min_sleep_ms: float = field(default=0.0, metadata=bounds(0, doc=(
        "the data pump's first sleep after a poll that moved a slab (it doubles up to "
        "poll_max_sleep_ms); 0 = auto: 0.05 ms where every process of the rank's host has a core, "
        "else poll_max_sleep_ms, since on shared cores each wake costs the lanes CPU")))
    infer_max_batch: int = field(default=32, metadata=bounds(1, doc=(
        "envs one policy call may serve: observation slabs queued together are merged while they "
        "fit (a half-batch always fits)")))
    flow_versions_ahead: int = field(default=2, metadata=bounds(0, doc=(
        "async flow control: the learner root lets this many updates' worth of groups be untrained "
        "(plus a slack that one straggler cannot hold up); 0 = no limit (sims outrun the learner, "
        "stale samples are dropped)")))


@dataclass
class OutputConfig:
    record_every: int = field(default=1, metadata=bounds(0, doc="write every Nth episode to HDF5; 0 = none"))
    episodes_per_shard: int = field(default=200, metadata=bounds(1))


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    learn: LearnConfig = field(default_factory=LearnConfig)
    layout: LayoutConfig = field(default_factory=LayoutConfig)
    planes: PlanesConfig = field(default_factory=PlanesConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
