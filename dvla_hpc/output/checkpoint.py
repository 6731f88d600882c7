"""Checkpoints that survive a crash mid-save and load with torch.load(weights_only=True): only
tensors, plain numbers, strings and containers of them are stored, never pickled objects."""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dvla_hpc.output.atomic import atomic_write

CHECKPOINT_NAME = re.compile(r"^ckpt_(\d+)\.pt$")
FORMAT_VERSION = 1
_KEYS = ("model", "optimizer", "counters", "rng")


class CheckpointError(RuntimeError):
    """A checkpoint file exists but is corrupt or not in this module's format."""


@dataclass
class Checkpoint:
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any]
    counters: dict[str, int | float]
    rng: dict[str, torch.Tensor]
    config_yaml: str = ""  # the run's config (YAML text); empty in checkpoints that predate it


def checkpoint_path(directory: Path, step: int) -> Path:
    return Path(directory) / f"ckpt_{step}.pt"


def save_checkpoint(
    path: Path,
    model_state: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
    counters: dict[str, int | float],
    rng: dict[str, torch.Tensor],
    config_yaml: str = "",
) -> None:
    """Write atomically: temp file in the same directory, fsync, rename, fsync the directory."""
    path = Path(path)
    for name, value in counters.items():
        if not isinstance(value, (int, float)):
            raise TypeError(f"counter {name!r} must be an int or float, got {type(value).__name__}")
    payload = {
        "format_version": FORMAT_VERSION,
        "model": model_state,
        "optimizer": optimizer_state,
        "counters": dict(counters),
        "rng": rng,
        "config_yaml": config_yaml,
    }
    atomic_write(path, lambda file: torch.save(payload, file))


def load_checkpoint(path: Path) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint file does not exist")
    try:
        payload = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # torch raises several unrelated types for truncated/garbage files
        problem = f"{type(exc).__name__}: {exc}"
        raise CheckpointError(f"{path}: corrupt or unreadable checkpoint ({problem})") from exc
    if not isinstance(payload, dict) or any(key not in payload for key in _KEYS):
        raise CheckpointError(f"{path}: not a dvla_hpc checkpoint (expected keys {_KEYS})")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: unsupported checkpoint format {payload.get('format_version')!r}")
    return Checkpoint(
        model_state=payload["model"],
        optimizer_state=payload["optimizer"],
        counters=payload["counters"],
        rng=payload["rng"],
        config_yaml=str(payload.get("config_yaml", "")),
    )


def find_checkpoint(source: str | Path) -> Path:
    """A checkpoint file as given, or the newest ckpt_<step>.pt under DIR/checkpoints or DIR (a run
    directory or a checkpoints folder); FileNotFoundError naming what is missing."""
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.is_dir():
        found = latest_checkpoint(path / "checkpoints") or latest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"no checkpoint (ckpt_<step>.pt) under {path}")
        return found
    return path


def latest_checkpoint(directory: Path) -> Path | None:
    """The ckpt_<step>.pt with the highest step, or None if there is none (temp files are ignored)."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    steps = [
        (int(match.group(1)), path)
        for path in directory.iterdir()
        if (match := CHECKPOINT_NAME.match(path.name))
    ]
    return max(steps)[1] if steps else None


def prune_checkpoints(directory: Path, keep: int) -> list[Path]:
    """Delete all but the `keep` highest-step ckpt_<step>.pt in `directory` (keep=0: delete none)."""
    if keep < 1:
        return []
    found = sorted((int(match.group(1)), path) for path in Path(directory).iterdir()
                   if (match := CHECKPOINT_NAME.match(path.name)))
    doomed = [path for _, path in found[:-keep]]
    for path in doomed:
        path.unlink(missing_ok=True)
    return doomed


def capture_rng_state() -> dict[str, torch.Tensor]:
    """torch (CPU and CUDA), numpy's global RandomState and python `random`, as plain tensors."""
    keys_name, np_keys, np_pos, np_has_gauss, np_cached_gauss = np.random.get_state()
    if keys_name != "MT19937":
        raise ValueError(f"unsupported numpy bit generator {keys_name!r}")
    py_version, py_internal, py_gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_keys.astype(np.int64)),
        "numpy_pos": torch.tensor(np_pos, dtype=torch.int64),
        "numpy_has_gauss": torch.tensor(np_has_gauss, dtype=torch.int64),
        "numpy_cached_gaussian": torch.tensor(np_cached_gauss, dtype=torch.float64),
        "python_version": torch.tensor(py_version, dtype=torch.int64),
        "python_internal": torch.tensor(py_internal, dtype=torch.int64),
        "python_has_gauss_next": torch.tensor(py_gauss_next is not None),
        "python_gauss_next": torch.tensor(py_gauss_next or 0.0, dtype=torch.float64),
    }
    if torch.cuda.is_available():
        state["torch_cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(state: dict[str, torch.Tensor]) -> None:
    missing = [key for key in ("torch", "numpy_keys", "python_internal") if key not in state]
    if missing:
        raise KeyError(f"rng state lacks {missing}")
    torch.set_rng_state(state["torch"])
    if "torch_cuda" in state and torch.cuda.is_available():
        # a resume on fewer GPUs restores the devices it has
        torch.cuda.set_rng_state_all(list(state["torch_cuda"])[: torch.cuda.device_count()])
    np.random.set_state((
        "MT19937",
        state["numpy_keys"].numpy().astype(np.uint32),
        int(state["numpy_pos"]),
        int(state["numpy_has_gauss"]),
        float(state["numpy_cached_gaussian"]),
    ))
    gauss_next = float(state["python_gauss_next"]) if bool(state["python_has_gauss_next"]) else None
    random.setstate((
        int(state["python_version"]),
        tuple(int(value) for value in state["python_internal"].tolist()),
        gauss_next,
    ))
