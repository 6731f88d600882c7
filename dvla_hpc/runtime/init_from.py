"""Start a run from the weights of another run or of SFT (`run.init_from`): the weights only, so
the run begins at policy version 0 with a fresh optimiser and its counters at 0 (`run.resume`
continues a run instead: optimiser, counters and RNG too)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from dvla_hpc.config.loader import ConfigError
from dvla_hpc.config.schema import Config
from dvla_hpc.learn.learner import GRPOLearner
from dvla_hpc.output.checkpoint import CheckpointError, find_checkpoint, load_checkpoint
from dvla_hpc.runtime.blueprint import Blueprint

KEY = "run.init_from"


def checkpoint_file(source: str, key: str = KEY) -> Path:
    """A checkpoint file as given, or the newest one under DIR/checkpoints or DIR; `key` names the
    setting in errors."""
    try:
        return find_checkpoint(source)
    except FileNotFoundError as err:
        raise ConfigError(f"{key}: {err}") from None


def read_weights(source: str, key: str = KEY) -> tuple[Path, dict[str, torch.Tensor]]:
    path = checkpoint_file(source, key)
    try:
        return path, load_checkpoint(path).model_state
    except CheckpointError as err:
        raise ConfigError(f"{key}: {err}") from None


def misfit(weights: dict[str, torch.Tensor], model: nn.Module) -> str | None:
    """How `weights` fail to fit `model` (names and shapes), or None when they fit."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    reshaped = [f"{name} {tuple(weights[name].shape)} != {tuple(tensor.shape)}"
                for name, tensor in expected.items()
                if name in weights and weights[name].shape != tensor.shape]
    problems = [f"{what} {', '.join(names[:4])}{' ...' if len(names) > 4 else ''}"
                for what, names in (("missing", missing), ("unexpected", unexpected),
                                    ("shape (checkpoint != model)", reshaped)) if names]
    return "; ".join(problems) or None


def starting_weights_problem(cfg: Config) -> str | None:
    """Why the checkpoint of `run.init_from` or `run.resume` cannot start this config's model
    (None: it can, or neither is set). Builds the model on the meta device, so the check costs no
    memory whatever the model's size."""
    key, source = (KEY, cfg.run.init_from) if cfg.run.init_from else ("run.resume", cfg.run.resume)
    if not source:
        return None
    try:
        if cfg.run.init_from and cfg.run.resume:
            raise ConfigError(f"{KEY} and run.resume exclude each other: resume continues a run "
                              "(weights, optimiser, counters), init_from starts a new one from weights")
        path, weights = read_weights(source, key)
        with torch.device("meta"):
            model = Blueprint.from_config(cfg).make_policy()
        problem = misfit(weights, model)
        if problem:
            raise ConfigError(f"{key}: {path} does not fit this model config ({problem}); "
                              "give the model.* and env.* settings the checkpoint was trained with")
    except ConfigError as err:
        return str(err)
    return None


def load_initial_weights(learner: GRPOLearner, source: str) -> Path:
    """Copy the checkpoint's weights into the learner's model, in place (its parameters stay views
    of the flat buffer that weights are published from)."""
    path, weights = read_weights(source)
    problem = misfit(weights, learner.model)
    if problem:
        raise ConfigError(f"{KEY}: {path} does not fit this model config ({problem})")
    learner.model.load_state_dict(weights)
    return path
