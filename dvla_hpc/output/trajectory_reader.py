"""Read trajectory shards and pending episode files back, deduplicated, in (rank, episode_id) order.

On-disk layout (see trajectory_writer.py for how it is produced):
  <dir>/traj_rank<rrrrr>_<kkkk>.hdf5   packed shards; root dataset `episode_ids` lists the episodes held
  <dir>/pending_rank<r>/ep_<id>.hdf5   one episode each, not yet packed
  *.tmp                                unfinished writes, never read
An episode found both in a shard and as a pending file (a crash between packing and cleanup)
is read from the shard only.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from dvla_hpc.output.episode import EpisodeRecord
from dvla_hpc.output.obs_keys import PROPRIO_KEY, RGB_SUFFIX, camera_key, decode_parts

SHARD_NAME = re.compile(r"^traj_rank(\d+)_(\d+)\.hdf5$")
PENDING_DIR_NAME = re.compile(r"^pending_rank(\d+)$")
PENDING_NAME = re.compile(r"^ep_(\d+)\.hdf5$")
EPISODE_IDS_DATASET = "episode_ids"


class TrajectoryFileError(RuntimeError):
    """A trajectory file exists but cannot be read or does not have the expected layout."""


def shard_path(directory: Path, rank: int, index: int) -> Path:
    return Path(directory) / f"traj_rank{rank:05d}_{index:04d}.hdf5"


def pending_dir(directory: Path, rank: int) -> Path:
    return Path(directory) / f"pending_rank{rank}"


def pending_path(directory: Path, rank: int, episode_id: int) -> Path:
    return pending_dir(directory, rank) / f"ep_{episode_id}.hdf5"


def list_shards(directory: Path, rank: int | None = None) -> list[tuple[int, int, Path]]:
    """(rank, shard index, path) of every finished shard, sorted."""
    found = []
    for path in Path(directory).iterdir():
        match = SHARD_NAME.match(path.name)
        if match and (rank is None or int(match.group(1)) == rank):
            found.append((int(match.group(1)), int(match.group(2)), path))
    return sorted(found)


def list_pending(directory: Path, rank: int | None = None) -> list[tuple[int, int, Path]]:
    """(rank, episode_id, path) of every finished pending episode file, sorted."""
    found = []
    for folder in Path(directory).iterdir():
        folder_match = PENDING_DIR_NAME.match(folder.name)
        if not folder.is_dir() or not folder_match:
            continue
        folder_rank = int(folder_match.group(1))
        if rank is not None and folder_rank != rank:
            continue
        for path in folder.iterdir():
            match = PENDING_NAME.match(path.name)
            if match:
                found.append((folder_rank, int(match.group(1)), path))
    return sorted(found)


def stored_episode_ids(path: Path) -> list[int]:
    """The episode ids a shard or pending file holds, in demo order (demo_0, demo_1, ...)."""
    try:
        with h5py.File(path, "r") as file:
            ids = [int(i) for i in file[EPISODE_IDS_DATASET][()]]
            num_demos = len(file["data"].keys())
    except (OSError, KeyError, ValueError) as exc:
        raise TrajectoryFileError(f"{path}: unreadable trajectory file ({exc})") from exc
    if len(ids) != num_demos:
        raise TrajectoryFileError(f"{path}: lists {len(ids)} episode ids but holds {num_demos} demos")
    return ids


@dataclass(frozen=True, order=True)
class StoredEpisode:
    rank: int
    episode_id: int
    path: Path
    demo: str  # group name under data/


def index_episodes(directory: Path) -> list[StoredEpisode]:
    """Where each episode lives, shards first, pending duplicates dropped, sorted by (rank, episode_id)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: trajectory directory does not exist")
    # Pending files are listed before shards: an episode packed in between is then found in its
    # shard, never missed. Pending files are not opened here, so one deleted by a live writer's
    # packing cannot break indexing (iter_episodes relocates it).
    pending = list_pending(directory)
    by_key: dict[tuple[int, int], StoredEpisode] = {}
    for rank, _, path in list_shards(directory):
        for position, episode_id in enumerate(stored_episode_ids(path)):
            previous = by_key.get((rank, episode_id))
            if previous is not None:
                raise TrajectoryFileError(
                    f"{path}: episode {episode_id} of rank {rank} is also stored in {previous.path}"
                )
            by_key[(rank, episode_id)] = StoredEpisode(rank, episode_id, path, f"demo_{position}")
    for rank, episode_id, path in pending:
        by_key.setdefault((rank, episode_id), StoredEpisode(rank, episode_id, path, "demo_0"))
    return sorted(by_key.values())


def _frames(obs: h5py.Group, camera: str) -> np.ndarray:
    key = camera_key(camera)
    if key not in obs and f"{camera}{RGB_SUFFIX}" in obs:  # files written before LIBERO's key names
        key = f"{camera}{RGB_SUFFIX}"
    return obs[key][()]


def read_demo(group: h5py.Group) -> EpisodeRecord:
    obs = group["obs"]
    attrs = group.attrs
    cameras = tuple(str(attrs.get("cameras", "agentview")).split(","))
    parts = decode_parts(attrs["proprio_keys"]) if "proprio_keys" in attrs else ((PROPRIO_KEY, 0),)
    return EpisodeRecord(
        images=np.stack([_frames(obs, camera) for camera in cameras], axis=1),
        cameras=cameras,
        proprio=np.concatenate([obs[name][()] for name, _ in parts], axis=1),
        actions=group["actions"][()],
        rewards=group["rewards"][()],
        dones=group["dones"][()].astype(np.bool_),
        policy_versions=group["policy_versions"][()],
        action_logp=group["action_logp"][()] if "action_logp" in group else None,
        env_steps=group["env_steps"][()] if "env_steps" in group else None,
        action_chunk=int(attrs.get("action_chunk", 1)),
        proprio_keys=() if [name for name, _ in parts] == [PROPRIO_KEY] else parts,
        task=str(attrs["task"]),
        instruction=str(attrs["instruction"]),
        success=bool(attrs["success"]),
        seed=int(attrs["seed"]),
        episode_id=int(attrs["episode_id"]),
    )


def _relocate(directory: Path, stored: StoredEpisode) -> StoredEpisode:
    """Where a pending episode went after a live writer packed it into a shard."""
    for candidate in index_episodes(directory):
        if (candidate.rank, candidate.episode_id) == (stored.rank, stored.episode_id):
            return candidate
    raise TrajectoryFileError(f"{stored.path}: episode {stored.episode_id} vanished and is in no shard")


def iter_episodes(directory: Path) -> Iterator[EpisodeRecord]:
    directory = Path(directory)
    open_path: Path | None = None
    open_file: h5py.File | None = None
    try:
        for stored in index_episodes(directory):
            if stored.path != open_path and not stored.path.exists():
                stored = _relocate(directory, stored)
            try:
                if stored.path != open_path:
                    if open_file is not None:
                        open_file.close()
                    open_path, open_file = stored.path, None
                    open_file = h5py.File(stored.path, "r")
                record = read_demo(open_file["data"][stored.demo])
            except (OSError, KeyError, ValueError) as exc:
                raise TrajectoryFileError(
                    f"{stored.path}: cannot read {stored.demo} (episode {stored.episode_id}): {exc}"
                ) from exc
            if record.episode_id != stored.episode_id:
                raise TrajectoryFileError(
                    f"{stored.path}: {stored.demo} holds episode {record.episode_id}, "
                    f"expected {stored.episode_id}"
                )
            yield record
    finally:
        if open_file is not None:
            open_file.close()


def count_episodes(directory: Path) -> int:
    return len(index_episodes(directory))


def trajectory_files(directory: Path) -> list[Path]:
    """The files iter_episodes reads from: shards, then pending files not yet packed."""
    files = {stored.path for stored in index_episodes(directory)}
    return sorted(files, key=lambda path: (path.parent != Path(directory), str(path)))
