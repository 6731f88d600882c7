"""Observation key names in trajectory files, as LIBERO's demo files name them.

A camera's frames are stored under `obs/<key>`: agentview -> agentview_rgb, wrist -> eye_in_hand_rgb,
any other camera -> <camera>_rgb. The proprio vector is stored as its named parts (EnvSpec.proprio_keys,
e.g. ee_pos, ee_ori, gripper_states), or whole under `obs/proprio` when the env names no parts."""
from __future__ import annotations

import json

CAMERA_KEYS = {"agentview": "agentview_rgb", "wrist": "eye_in_hand_rgb"}
RGB_SUFFIX = "_rgb"
PROPRIO_KEY = "proprio"


def camera_key(camera: str) -> str:
    return CAMERA_KEYS.get(camera, camera + RGB_SUFFIX)


def camera_of_key(key: str) -> str | None:
    """The camera a frame key names (None: not a frame key)."""
    for camera, name in CAMERA_KEYS.items():
        if key == name:
            return camera
    return key[: -len(RGB_SUFFIX)] if key.endswith(RGB_SUFFIX) else None


def proprio_parts(proprio_keys: tuple[tuple[str, int], ...], proprio_dim: int) -> tuple[tuple[str, int], ...]:
    """The (name, width) parts a proprio vector of `proprio_dim` is stored as."""
    if not proprio_keys:
        return ((PROPRIO_KEY, proprio_dim),)
    widths = sum(width for _, width in proprio_keys)
    if widths != proprio_dim:
        raise ValueError(f"proprio_keys {list(proprio_keys)} cover {widths} values, "
                         f"but proprio has {proprio_dim}")
    return tuple(proprio_keys)


def encode_parts(parts: tuple[tuple[str, int], ...]) -> str:
    return json.dumps([[name, width] for name, width in parts])


def decode_parts(text: str) -> tuple[tuple[str, int], ...]:
    return tuple((str(name), int(width)) for name, width in json.loads(text))
