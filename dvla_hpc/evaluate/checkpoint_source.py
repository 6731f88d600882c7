"""The checkpoint an evaluation reads: found from a file or a run directory, its config recovered
(stored in the checkpoint, or the run directory's config.yaml for older checkpoints), its
weights loaded into a policy built from that config."""
from __future__ import annotations

from pathlib import Path

from dvla_hpc.config.loader import ConfigError, load_config_text
from dvla_hpc.config.schema import Config
from dvla_hpc.model.vla import VLAPolicy
from dvla_hpc.output.checkpoint import Checkpoint, CheckpointError, find_checkpoint, load_checkpoint


class EvalInputError(ValueError):
    """Bad evaluation input; the message names the argument and the problem in one line."""


def checkpoint_to_evaluate(source: str) -> Path:
    """A checkpoint file as given, or the newest one of a run directory (or of a checkpoints/ dir)."""
    try:
        return find_checkpoint(source)
    except FileNotFoundError as err:
        raise EvalInputError(f"--checkpoint: {err}") from None


def read_checkpoint(path: Path) -> Checkpoint:
    try:
        return load_checkpoint(path)
    except (CheckpointError, OSError) as err:
        raise EvalInputError(f"--checkpoint: {clipped(first_line(err))}") from None


def run_directory(path: Path) -> Path:
    """<run>/checkpoints/ckpt_N.pt -> <run>; a checkpoint anywhere else -> its own directory."""
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def checkpoint_config_text(path: Path, ckpt: Checkpoint) -> str:
    if ckpt.config_yaml:
        return ckpt.config_yaml
    beside = run_directory(path) / "config.yaml"
    if not beside.is_file():
        raise EvalInputError(f"--checkpoint: {path} stores no config and there is no {beside}")
    return beside.read_text()


def config_from_text(text: str, overrides: list[str]) -> Config:
    try:
        return load_config_text(text, overrides, "the checkpoint's config")
    except ConfigError as err:
        raise EvalInputError(f"config: {err}") from None


def load_weights(policy: VLAPolicy, ckpt: Checkpoint, path: Path) -> VLAPolicy:
    try:
        policy.load_state_dict(ckpt.model_state)
    except RuntimeError as err:
        raise EvalInputError(
            f"--checkpoint: the weights in {path} do not fit the model its config builds (did an "
            f"override change model.* or the env?): {first_line(err)}") from None
    return policy.eval()


def clipped(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return " ".join(lines[:2]) if lines else type(err).__name__
