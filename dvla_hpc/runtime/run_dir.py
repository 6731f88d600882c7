"""The run directory: config copy, metrics, trajectories, checkpoints, summary. `--resume DIR`
continues in DIR, with the config DIR's run was started with."""
from __future__ import annotations

import time
from pathlib import Path

import yaml

from dvla_hpc.config.loader import ConfigError, to_dict
from dvla_hpc.config.schema import Config

CONFIG_NAME = "config.yaml"


def resolve_run_dir(cfg: Config) -> Path:
    if cfg.run.out:
        return Path(cfg.run.out)
    if cfg.run.resume and (resumed := resumed_run_dir(cfg.run.resume)) is not None:
        return resumed
    return Path("runs") / f"{cfg.run.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def resumed_run_dir(source: str) -> Path | None:
    """The run directory that `run.resume=source` continues in: the directory itself (or the run
    above its checkpoints/ folder). A checkpoint file starts a new directory: older than its run's
    newest checkpoint, it would interleave two histories in one folder."""
    path = Path(source)
    if not path.is_dir():
        return None
    return path.parent if path.name == "checkpoints" and (path.parent / CONFIG_NAME).is_file() else path


def resumed_config(source: str) -> Path | None:
    """The config a resumed run directory was started with (None: not a run directory)."""
    run_dir = resumed_run_dir(source)
    found = run_dir / CONFIG_NAME if run_dir is not None else None
    return found if found is not None and found.is_file() else None


def config_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def prepare_run_dir(cfg: Config, run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"run.out: cannot create run directory {run_dir}: {err.strerror}") from None
    (run_dir / CONFIG_NAME).write_text(config_yaml(cfg))
