"""Write episodes to HDF5 in the robomimic/LIBERO layout so that a SIGKILL at any moment loses
at most the episode being written and never leaves a half-written file under a final name.

Each episode becomes its own pending file (temp file, fsync, atomic rename). Every
`episodes_per_shard` episodes, and at close, pending files are copied into a shard (temp file,
fsync, atomic rename) and only then deleted. A shard lists the episode ids it holds, so a pending
file that survived a crash after its shard was renamed is recognised as a duplicate: readers skip
it and the next writer for the same rank deletes it. One writer per (directory, rank) at a time.

What a file holds, beyond LIBERO's own keys (obs/agentview_rgb, obs/eye_in_hand_rgb, proprio parts
by name, actions, rewards, dones; data attrs env_args, problem_info, total; demo attr num_samples):
- one row per policy decision: with action chunks (demo attr action_chunk = k > 1) an `actions`
  row is k actions of A dims, flattened, and `env_steps` says how many the simulator executed;
  `output/demo_loader.py` unrolls them into one row per simulator step, as LIBERO stores them;
- `policy_versions` (T,) and `action_logp` (T, k * A): the behaviour policy's version and the
  log-probability of each action token (a row's sum is the action's log-probability);
- frames exactly as the policy saw them (no macros_image_convention attr: LIBERO's own files say
  "opengl", upside down, and the loader turns those the way the LIBERO env adapter does).
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from types import TracebackType

import h5py
import numpy as np

from dvla_hpc.output.episode import UNASSIGNED_EPISODE_ID, EpisodeRecord
from dvla_hpc.output.obs_keys import camera_key, encode_parts, proprio_parts
from dvla_hpc.output.trajectory_reader import (
    EPISODE_IDS_DATASET,
    TrajectoryFileError,
    list_pending,
    list_shards,
    pending_dir,
    pending_path,
    shard_path,
    stored_episode_ids,
)

IMAGE_COMPRESSION = "gzip"
IMAGE_COMPRESSION_LEVEL = 1  # images dominate the bytes; level 1 keeps compression cheap for rollouts


def _fsync(path: Path) -> None:
    """fsync a file or directory by path (a directory fsync makes a rename inside it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_path(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def _publish(temp: Path, final: Path) -> None:
    _fsync(temp)
    os.replace(temp, final)
    _fsync(final.parent)


def _write_demo(data: h5py.Group, name: str, record: EpisodeRecord) -> None:
    demo = data.create_group(name)
    obs = demo.create_group("obs")
    frame_shape = record.images.shape[2:]
    for i, camera in enumerate(record.cameras):
        obs.create_dataset(
            camera_key(camera),
            data=record.images[:, i],
            chunks=(1, *frame_shape),
            compression=IMAGE_COMPRESSION,
            compression_opts=IMAGE_COMPRESSION_LEVEL,
        )
    parts = proprio_parts(record.proprio_keys, record.proprio.shape[1])
    start = 0
    for part, width in parts:
        obs.create_dataset(part, data=record.proprio[:, start: start + width])
        start += width
    demo.create_dataset("actions", data=record.actions)
    demo.create_dataset("rewards", data=record.rewards)
    demo.create_dataset("dones", data=record.dones)
    demo.create_dataset("policy_versions", data=record.policy_versions)
    if record.action_logp is not None:
        demo.create_dataset("action_logp", data=record.action_logp)
    if record.env_steps is not None:
        demo.create_dataset("env_steps", data=record.env_steps)
    demo.attrs["num_samples"] = np.int64(record.num_steps)
    demo.attrs["cameras"] = ",".join(record.cameras)
    demo.attrs["proprio_keys"] = encode_parts(parts)
    demo.attrs["action_chunk"] = np.int64(record.action_chunk)
    demo.attrs["task"] = record.task
    demo.attrs["instruction"] = record.instruction
    demo.attrs["success"] = np.bool_(record.success)
    demo.attrs["seed"] = np.int64(record.seed)
    demo.attrs["episode_id"] = np.int64(record.episode_id)
    demo.attrs["policy_version_min"] = np.int64(record.policy_versions.min())
    demo.attrs["policy_version_max"] = np.int64(record.policy_versions.max())


def _language_instruction(instructions: list[str]) -> str | list[str]:
    """LIBERO's files hold one task, so one instruction; a file of several tasks lists them all."""
    distinct = list(dict.fromkeys(instructions))
    return distinct[0] if len(distinct) == 1 else distinct


class TrajectoryWriter:
    def __init__(self, directory: Path, rank: int, env_name: str, episodes_per_shard: int = 200,
                 env_kwargs: dict | None = None, task_catalogue: tuple[str, ...] = ()) -> None:
        """`env_kwargs` (JSON-able) rebuild the env with `make_env(env_name, **env_kwargs)`;
        `task_catalogue` is the env's instruction list (EnvSpec.instructions)."""
        if episodes_per_shard < 1:
            raise ValueError(f"episodes_per_shard must be >= 1, got {episodes_per_shard}")
        self.directory = Path(directory)
        self.rank = rank
        self.env_name = env_name
        self.env_args = json.dumps({"env_name": env_name, "env_kwargs": dict(env_kwargs or {})})
        self.task_catalogue = list(task_catalogue)
        self.episodes_per_shard = episodes_per_shard
        self._pending_dir = pending_dir(self.directory, rank)
        self._pending_dir.mkdir(parents=True, exist_ok=True)
        self._closed = False
        self._remove_temp_files()
        self._pending: dict[int, Path] = {}
        self._used_ids: set[int] = set()
        self._next_shard_index = 0
        self._recover()
        self.next_episode_id = max(self._used_ids, default=-1) + 1
        if len(self._pending) >= episodes_per_shard:
            self._pack()

    def _remove_temp_files(self) -> None:
        for temp in self.directory.glob(f"traj_rank{self.rank:05d}_*.hdf5.tmp"):
            temp.unlink()
        for temp in self._pending_dir.glob("*.tmp"):
            temp.unlink()

    def _recover(self) -> None:
        """Continue after an earlier writer of this rank: shard numbering, episode ids, leftovers."""
        for _, index, path in list_shards(self.directory, self.rank):
            self._used_ids.update(stored_episode_ids(path))
            self._next_shard_index = index + 1
        for _, episode_id, path in list_pending(self.directory, self.rank):
            if episode_id in self._used_ids:
                path.unlink()  # already packed into a shard before the crash
            else:
                self._pending[episode_id] = path
                self._used_ids.add(episode_id)

    def write_episode(self, record: EpisodeRecord) -> int:
        """Persist one episode durably; returns its episode id (assigned here if the record has none)."""
        if self._closed:
            raise RuntimeError(f"TrajectoryWriter for {self.directory} rank {self.rank} is closed")
        episode_id = record.episode_id
        if episode_id == UNASSIGNED_EPISODE_ID:
            episode_id = self.next_episode_id
            record = dataclasses.replace(record, episode_id=episode_id)
        elif episode_id < 0 or episode_id in self._used_ids:
            raise ValueError(f"episode id {episode_id} is invalid or already written for rank {self.rank}")
        record.validate()

        final = pending_path(self.directory, self.rank, episode_id)
        temp = _temp_path(final)
        with h5py.File(temp, "w") as file:
            _write_demo(file.create_group("data"), "demo_0", record)
            self._write_index(file, [episode_id], record.num_steps, [record.instruction])
        _publish(temp, final)

        self._pending[episode_id] = final
        self._used_ids.add(episode_id)
        self.next_episode_id = max(self.next_episode_id, episode_id + 1)
        if len(self._pending) >= self.episodes_per_shard:
            self._pack()
        return episode_id

    def _pack(self) -> None:
        episode_ids = sorted(self._pending)
        final = shard_path(self.directory, self.rank, self._next_shard_index)
        temp = _temp_path(final)
        total = 0
        instructions = []
        with h5py.File(temp, "w") as shard:
            data = shard.create_group("data")
            for position, episode_id in enumerate(episode_ids):
                source_path = self._pending[episode_id]
                try:
                    with h5py.File(source_path, "r") as source:
                        demo = source["data/demo_0"]
                        source.copy(demo, data, name=f"demo_{position}")
                        total += int(demo.attrs["num_samples"])
                        instructions.append(str(demo.attrs["instruction"]))
                except (OSError, KeyError) as exc:
                    raise TrajectoryFileError(f"{source_path}: unreadable pending episode ({exc})") from exc
            self._write_index(shard, episode_ids, total, instructions)
        _publish(temp, final)
        # Only now is it safe to drop the pending copies; a crash before the loop ends leaves
        # duplicates that readers skip and the next writer deletes.
        for episode_id in episode_ids:
            self._pending.pop(episode_id).unlink()
        self._next_shard_index += 1

    def _write_index(self, file: h5py.File, episode_ids: list[int], total: int,
                     instructions: list[str]) -> None:
        file.create_dataset(EPISODE_IDS_DATASET, data=np.asarray(episode_ids, dtype=np.int64))
        data = file["data"]
        data.attrs["total"] = np.int64(total)  # samples (rows) over all demos, as robomimic counts
        data.attrs["num_demos"] = np.int64(len(episode_ids))
        data.attrs["env_name"] = self.env_name
        data.attrs["env_args"] = self.env_args
        data.attrs["problem_info"] = json.dumps({
            "problem_name": self.env_name, "domain_name": "dvla_hpc",
            "language_instruction": _language_instruction(instructions),
            "task_catalogue": self.task_catalogue})
        data.attrs["rank"] = np.int64(self.rank)

    def close(self) -> None:
        if self._closed:
            return
        if self._pending:
            self._pack()
        self._closed = True
        try:
            self._pending_dir.rmdir()
        except OSError:
            pass  # not empty (shouldn't happen) or already gone

    def __enter__(self) -> TrajectoryWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
