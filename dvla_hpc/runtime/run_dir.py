"""The run directory: config copy, metrics, trajectories, checkpoints, summary."""
from __future__ import annotations

import time
from pathlib import Path

import yaml

from dvla_hpc.config.loader import ConfigError, to_dict
from dvla_hpc.config.schema import Config
from dvla_hpc.learn.learner import GRPOLearner
from dvla_hpc.lanes.learn import RunProgress
from dvla_hpc.output.checkpoint import (CheckpointError, capture_rng_state, checkpoint_path,
                                        load_checkpoint, restore_rng_state, save_checkpoint)
from dvla_hpc.runtime.init_from import checkpoint_file


def resolve_run_dir(cfg: Config) -> Path:
    if cfg.run.out:
        return Path(cfg.run.out)
    return Path("runs") / f"{cfg.run.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def config_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def prepare_run_dir(cfg: Config, run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"run.out: cannot create run directory {run_dir}: {err.strerror}") from None
    (run_dir / "config.yaml").write_text(config_yaml(cfg))


def save_learner(learner: GRPOLearner, progress: RunProgress, run_dir: Path, cfg: Config) -> Path:
    path = checkpoint_path(run_dir / "checkpoints", learner.version)
    save_checkpoint(path, learner.model.state_dict(), learner.optimizer.state_dict(),
                    {"version": learner.version, "env_steps": progress.env_steps,
                     "episodes": progress.episodes, "updates": progress.updates},
                    capture_rng_state(), config_yaml(cfg))
    return path


def resume_learner(learner: GRPOLearner, source: str) -> dict:
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
    return dict(ckpt.counters)
