"""One reader for demonstrations: dvla_hpc trajectory files (a run's trajectories directory, or its
shards) and LIBERO/robomimic demo files (`data/demo_<i>/obs/<key>`, `actions`, ...) come back in one
in-memory form, `Demo`, with the file's keys mapped to the policy's inputs.

Key map: pairs (dataset key, policy input). The input is a camera name (agentview, wrist, ...) or
"proprio"; keys mapped to "proprio" are concatenated in the order given. Left out, cameras come
from the frame keys (agentview_rgb -> agentview, eye_in_hand_rgb -> wrist, <cam>_rgb -> <cam>) and
proprio from the file's own `proprio_keys` attribute (dvla_hpc files), else from `proprio_keys`
(the env's layout, e.g. ee_pos, ee_ori, gripper_states for LIBERO), else `obs/proprio`.

Actions come back one row per simulator step, as LIBERO stores them: a dvla_hpc file recorded with
action chunks (one row per decision, attr action_chunk = k) is unrolled to the steps the simulator
executed, and `observed_at` says which step each observation preceded.

Images: LIBERO's files say `macros_image_convention = "opengl"`: their frames are upside down. The
LIBERO env adapter (envs/libero_env.py) shows the policy robosuite's frames rotated 180 degrees, as
openvla does, so with `upright=True` such frames are rotated the same way. dvla_hpc files hold
frames as the policy saw them and are left alone. Frames are not resized (LIBERO's are 128x128).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import h5py
import numpy as np

from dvla_hpc.output.obs_keys import PROPRIO_KEY, camera_of_key, decode_parts
from dvla_hpc.output.trajectory_reader import TrajectoryFileError, index_episodes

PROPRIO_INPUT = "proprio"
DEMO_NAME = re.compile(r"^demo_(\d+)$")
KeyMap = Sequence[tuple[str, str]] | Mapping[str, str]


class DemoFileError(ValueError):
    """A demonstration file is missing, unreadable or lacks what the caller asked for; the message
    names the file, the demo and the key."""


@dataclass
class Demo:
    source: str  # "<file>:demo_<i>"
    instruction: str
    images: dict[str, np.ndarray]  # policy camera name -> (T, H, W, 3) uint8
    proprio: np.ndarray  # (T, P) float32, the mapped keys concatenated in order
    actions: np.ndarray  # (N, A) float32, one row per simulator step
    observed_at: np.ndarray  # (T,) int64: the row of `actions` taken right after observation t
    rewards: np.ndarray | None = None  # (T,) float32
    dones: np.ndarray | None = None  # (T,) bool
    success: bool | None = None  # None: the file does not say (LIBERO's demos are successes)

    @property
    def num_observations(self) -> int:
        return int(self.proprio.shape[0])

    def frames(self, cameras: Sequence[str]) -> np.ndarray:
        """(T, cameras, H, W, 3), stacked in the order given."""
        missing = [camera for camera in cameras if camera not in self.images]
        if missing:
            raise DemoFileError(f"{self.source}: no frames for camera(s) {', '.join(missing)} "
                                f"(it has {', '.join(self.images) or 'none'}); map a frame key to them")
        return np.stack([self.images[camera] for camera in cameras], axis=1)


def load_demos(paths: Iterable[str | Path], key_map: KeyMap | None = None,
               proprio_keys: Sequence[str] = (), upright: bool = True) -> list[Demo]:
    """Every demo of every path (a demo file, a dvla_hpc trajectory or run directory, or a directory
    of demo files), in order."""
    pairs = list(key_map.items() if isinstance(key_map, Mapping) else key_map or ())
    paths = list(paths)
    demos = []
    for path, names in _sources(paths):
        demos.extend(_read_file(path, names, pairs, tuple(proprio_keys), upright))
    if not demos:
        raise DemoFileError(f"no demonstrations found in {', '.join(map(str, paths))}")
    return demos


def _sources(paths: Iterable[str | Path]) -> Iterator[tuple[Path, list[str] | None]]:
    """(file, demo group names or None for all) in reading order."""
    for given in paths:
        path = Path(given)
        if not path.exists():
            raise DemoFileError(f"{path}: no such file or directory")
        if path.is_file():
            yield path, None
            continue
        if (path / "trajectories").is_dir():
            path = path / "trajectories"
        try:
            stored = index_episodes(path)
        except TrajectoryFileError as err:
            raise DemoFileError(str(err)) from None
        if stored:
            by_file: dict[Path, list[str]] = {}
            for episode in stored:
                by_file.setdefault(episode.path, []).append(episode.demo)
            yield from by_file.items()
        else:
            files = sorted(path.glob("*.hdf5"))
            if not files:
                raise DemoFileError(f"{path}: holds no .hdf5 demo files")
            for file in files:
                yield file, None


def _read_file(path: Path, names: list[str] | None, pairs: list[tuple[str, str]],
               proprio_keys: tuple[str, ...], upright: bool) -> list[Demo]:
    if not h5py.is_hdf5(path):
        raise DemoFileError(f"{path}: not an HDF5 file")
    try:
        with h5py.File(path, "r") as file:
            data = file.get("data")
            found = sorted((name for name in data if DEMO_NAME.match(name)),
                           key=lambda name: int(DEMO_NAME.match(name).group(1))) \
                if isinstance(data, h5py.Group) else []
            if not found:
                raise DemoFileError(f"{path}: no data/demo_<i> groups (not a robomimic/LIBERO demo file)")
            flip = upright and _text(data.attrs.get("macros_image_convention", "")) == "opengl"
            instruction = _file_instruction(data)
            return [_read_demo(f"{path}:{name}", data[name], pairs, proprio_keys, flip, instruction)
                    for name in (names or found)]
    except (OSError, KeyError) as err:
        raise DemoFileError(f"{path}: unreadable ({err})") from None


def _text(value: object) -> str:
    """An attribute as text: h5py returns fixed-length strings as bytes."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _file_instruction(data: h5py.Group) -> str:
    try:
        instruction = json.loads(_text(data.attrs.get("problem_info", "{}"))).get("language_instruction", "")
    except (json.JSONDecodeError, AttributeError):
        return ""
    return instruction if isinstance(instruction, str) else ""


def _read_demo(source: str, group: h5py.Group, pairs: list[tuple[str, str]], proprio_keys: tuple[str, ...],
               flip: bool, file_instruction: str) -> Demo:
    obs = group.get("obs")
    if not isinstance(obs, h5py.Group):
        raise DemoFileError(f"{source}: no obs group")
    if "actions" not in group:
        raise DemoFileError(f"{source}: no actions dataset")
    camera_keys = [(key, name) for key, name in pairs if name != PROPRIO_INPUT] or \
        [(key, camera) for key in obs if (camera := camera_of_key(key)) is not None]
    proprio_parts = [key for key, name in pairs if name == PROPRIO_INPUT] or \
        _default_proprio(group, obs, proprio_keys)

    images = {}
    for key, camera in camera_keys:
        frames = _dataset(source, obs, key)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise DemoFileError(f"{source}: obs/{key} must be (T, H, W, 3) uint8 frames, "
                                f"got {frames.shape} {frames.dtype}")
        images[camera] = np.ascontiguousarray(frames[:, ::-1, ::-1]) if flip else frames
    parts = [_dataset(source, obs, key).astype(np.float32) for key in proprio_parts]
    for key, part in zip(proprio_parts, parts):
        if part.ndim != 2:
            raise DemoFileError(f"{source}: obs/{key} must be (T, width), got shape {part.shape}")
    rows = group["actions"][()]
    if rows.ndim != 2:
        raise DemoFileError(f"{source}: actions must be (T, action width), got shape {rows.shape}")
    steps = rows.shape[0]
    for name, array in [*((f"obs/{k}", v) for k, v in images.items()), *zip(proprio_parts, parts)]:
        if array.shape[0] != steps:
            raise DemoFileError(f"{source}: {name} has {array.shape[0]} rows, actions {rows.shape}")
    proprio = np.concatenate(parts, axis=1) if parts else np.zeros((steps, 0), np.float32)
    actions, observed_at = _unroll(source, group, rows.astype(np.float32))
    attrs = group.attrs
    return Demo(
        source=source,
        instruction=_text(attrs["instruction"]) if "instruction" in attrs else file_instruction,
        images=images, proprio=proprio, actions=actions, observed_at=observed_at,
        rewards=group["rewards"][()].astype(np.float32) if "rewards" in group else None,
        dones=group["dones"][()].astype(np.bool_) if "dones" in group else None,
        success=bool(attrs["success"]) if "success" in attrs else None)


def _default_proprio(group: h5py.Group, obs: h5py.Group, proprio_keys: tuple[str, ...]) -> list[str]:
    if "proprio_keys" in group.attrs:
        return [name for name, _ in decode_parts(group.attrs["proprio_keys"])]
    if proprio_keys:
        return list(proprio_keys)
    return [PROPRIO_KEY] if PROPRIO_KEY in obs else []


def _dataset(source: str, obs: h5py.Group, key: str) -> np.ndarray:
    key = key.removeprefix("obs/")
    if key not in obs:
        raise DemoFileError(f"{source}: no obs/{key} (obs keys: {', '.join(sorted(obs))})")
    return obs[key][()]


def _unroll(source: str, group: h5py.Group, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One action per simulator step, and the step each observation row preceded."""
    k = int(group.attrs.get("action_chunk", 1))
    if k == 1:
        return rows, np.arange(len(rows), dtype=np.int64)
    if rows.shape[1] % k:
        raise DemoFileError(f"{source}: actions width {rows.shape[1]} is not a multiple of action_chunk {k}")
    executed = group["env_steps"][()].astype(np.int64) if "env_steps" in group else np.full(len(rows), k)
    chunks = rows.reshape(len(rows), k, -1)
    actions = np.concatenate([chunk[:n] for chunk, n in zip(chunks, executed)])
    return actions, np.concatenate([[0], np.cumsum(executed)[:-1]]).astype(np.int64)
