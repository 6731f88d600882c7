"""Everything every role derives from the config alone: env spec, model factory, slab layouts, sizes.
What needs torch (instruction tokens, action bins, the policy) is made on first use, so a sim rank
imports no torch."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from dvla_hpc.config.loader import ConfigError
from dvla_hpc.config.schema import Config
from dvla_hpc.envs.protocol import EnvSpec
from dvla_hpc.envs.registry import env_spec
from dvla_hpc.envs.vector import VectorEnv
from dvla_hpc.lanes.sample import EpisodeBudget
from dvla_hpc.memory.layouts import action_layout, episode_layout, observation_layout
from dvla_hpc.memory.slab_pool import SlabLayout

if TYPE_CHECKING:
    import torch

    from dvla_hpc.model.tokens import ActionBins
    from dvla_hpc.model.vla import VLAPolicy


def env_kwargs(cfg: Config) -> dict:
    """What `make_env` / `env_spec` take for the configured env (JSON: it travels to workers)."""
    env = cfg.env
    if env.name == "gymnasium":
        kwargs = {"gym_id": env.gym_id, "observation": env.observation, "image_size": env.image_size}
    elif env.name == "libero":
        kwargs = {"suite": env.suite, "tasks": env.tasks, "cameras": env.cameras,
                  "image_size": env.image_size, "fast_render": env.fast_render}
    else:
        kwargs = {"image_size": env.image_size, "shaped_reward": env.shaped_reward}
        if env.name == "debug_faulty":
            kwargs.update(fault=env.fault, fault_step=env.fault_step, fault_rate=env.fault_rate)
    if env.max_episode_steps:
        kwargs["max_episode_steps"] = env.max_episode_steps
    if cfg.model.action_chunk > 1:
        kwargs["action_chunk"] = cfg.model.action_chunk
    return kwargs


def make_vector_env(cfg: Config) -> VectorEnv:
    return VectorEnv(cfg.env.name, env_kwargs(cfg), cfg.env.envs_per_sampler,
                     cfg.env.workers_per_sampler, cfg.env.step_timeout_s, cfg.env.worker_nice)


def episode_budget(cfg: Config, samplers: int) -> EpisodeBudget:
    """Sync mode: each sampler's share of one update's groups per round. Async: unlimited."""
    learn = cfg.learn
    if cfg.run.mode == "async":
        return EpisodeBudget(None)
    if learn.groups_per_update % samplers:
        raise ConfigError(
            f"learn.groups_per_update: sync mode splits each update's {learn.groups_per_update} "
            f"groups evenly over the {samplers} sim ranks; make it a multiple of {samplers}")
    return EpisodeBudget(learn.groups_per_update // samplers * learn.group_size)


def check_learner_split(cfg: Config, samplers: int) -> None:
    """Data-parallel learners each train `groups_per_update / learn_ranks` groups per update; in
    sync mode each sampler's groups of a round split evenly over them too."""
    k, groups = cfg.layout.learn_ranks, cfg.learn.groups_per_update
    if groups % k:
        raise ConfigError(f"learn.groups_per_update: {groups} groups cannot split evenly over "
                          f"layout.learn_ranks={k} learners; make it a multiple of {k}")
    if cfg.run.mode == "sync" and (groups // samplers) % k:
        raise ConfigError(f"learn.groups_per_update: sync mode gives each of the {samplers} sim ranks "
                          f"{groups // samplers} group(s) per round, which cannot split evenly over {k} "
                          f"learners; make it a multiple of {samplers * k}")


@dataclass
class Blueprint:
    cfg: Config
    spec: EnvSpec
    obs_layout: SlabLayout
    action_layout: SlabLayout
    episode_layout: SlabLayout

    @classmethod
    def from_config(cls, cfg: Config) -> "Blueprint":
        try:
            spec = env_spec(cfg.env.name, **env_kwargs(cfg))
        except (ValueError, ImportError) as err:
            raise ConfigError(f"env.name={cfg.env.name}: {err}") from None
        half = cfg.env.envs_per_sampler // 2
        return cls(cfg=cfg, spec=spec, obs_layout=observation_layout(spec, half),
                   action_layout=action_layout(spec, half), episode_layout=episode_layout(spec))

    @cached_property
    def instruction_tokens(self) -> "torch.Tensor":
        from dvla_hpc.model.tokens import tokenize_catalogue
        model = self.cfg.model
        return tokenize_catalogue(self.spec.instructions, model.vocab_size, model.max_instruction_tokens)

    @cached_property
    def bins(self) -> "ActionBins":
        from dvla_hpc.model.tokens import ActionBins
        return ActionBins(self.cfg.model.action_bins)

    def make_policy(self) -> "VLAPolicy":
        from dvla_hpc.model.vla import VLAPolicy
        return VLAPolicy(self.cfg.model, self.spec)

    def initial_policy(self) -> "VLAPolicy":
        import torch
        torch.manual_seed(self.cfg.run.seed)
        return self.make_policy()

    @property
    def infer_batch(self) -> int:
        """The most envs one policy call serves: pipeline.infer_max_batch, or a half-batch if larger."""
        return max(self.obs_layout.fields["env_ids"].shape[0], self.cfg.pipeline.infer_max_batch)

    def learner_episode_slots(self, samplers: int) -> int:
        """Enough slots that incomplete groups can never starve the pool."""
        p, g = self.cfg.pipeline, self.cfg.learn.group_size
        if p.episode_slots:
            return p.episode_slots
        per_sampler = self.cfg.env.envs_per_sampler + 2 * g
        return samplers * per_sampler + (self.cfg.learn.groups_per_update + 1) * g + p.queue_depth

    def episode_budget(self, samplers: int) -> EpisodeBudget:
        return episode_budget(self.cfg, samplers)

    def infer_episode_slots(self, samplers: int) -> int:
        return samplers * self.cfg.env.envs_per_sampler + self.cfg.pipeline.queue_depth
