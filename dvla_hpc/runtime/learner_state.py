"""The learner's state in and out of checkpoints: weights, optimiser, counters and RNG."""
from __future__ import annotations

from pathlib import Path

from dvla_hpc.config.loader import ConfigError
from dvla_hpc.config.schema import Config
from dvla_hpc.learn.learner import GRPOLearner
from dvla_hpc.lanes.learn import RunProgress
from dvla_hpc.output.checkpoint import (CheckpointError, capture_rng_state, checkpoint_path,
                                        load_checkpoint, prune_checkpoints, restore_rng_state,
                                        save_checkpoint)
from dvla_hpc.runtime.init_from import checkpoint_file
from dvla_hpc.runtime.run_dir import config_yaml


def save_learner(learner: GRPOLearner, progress: RunProgress, run_dir: Path, cfg: Config) -> Path:
    """Write ckpt_<version>.pt atomically, then delete all but the newest `run.checkpoint_keep`."""
    path = checkpoint_path(run_dir / "checkpoints", learner.version)
    save_checkpoint(path, learner.model.state_dict(), learner.optimizer.state_dict(),
                    {"version": learner.version, "env_steps": progress.env_steps,
                     "episodes": progress.episodes, "updates": progress.updates},
                    capture_rng_state(), config_yaml(cfg))
    prune_checkpoints(path.parent, cfg.run.checkpoint_keep)
    return path


def resume_learner(learner: GRPOLearner, source: str, announce: bool = True) -> dict:
    """Load weights, optimizer, counters and RNG from a checkpoint file or a run directory."""
    path = checkpoint_file(source, "run.resume")
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as err:
        raise ConfigError(f"run.resume: {err}") from None
    try:
        learner.model.load_state_dict(ckpt.model_state)
    except RuntimeError as err:
        raise ConfigError(f"run.resume: {path} does not fit this model config: {err}") from None
    learner.optimizer.load_state_dict(ckpt.optimizer_state)
    learner.version = int(ckpt.counters["version"])
    restore_rng_state(ckpt.rng)
    if announce:
        print(f"resumed from {path}: policy version {learner.version}, "
              f"{int(ckpt.counters['env_steps']):,} env steps", flush=True)
    return dict(ckpt.counters)
