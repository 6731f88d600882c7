"""Trajectory writer/reader: layout, bit-exact round trip, resume, and survival of SIGKILL."""
from __future__ import annotations

import dataclasses
import inspect
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from dvla_hpc.output.demo_loader import load_demos
from dvla_hpc.output.episode import EpisodeRecord
from dvla_hpc.output.trajectory_reader import (
    TrajectoryFileError,
    count_episodes,
    index_episodes,
    iter_episodes,
    trajectory_files,
)
from dvla_hpc.output.trajectory_writer import TrajectoryWriter

REPO_ROOT = Path(__file__).resolve().parents[1]


def make_episode(key: int, steps: int | None = None) -> EpisodeRecord:
    """Deterministic in `key`, so any episode read back can be checked against its source."""
    rng = np.random.default_rng(key)
    steps = steps if steps is not None else int(rng.integers(1, 12))
    dones = np.zeros(steps, dtype=bool)
    dones[-1] = True
    return EpisodeRecord(
        images=rng.integers(0, 256, size=(steps, 1, 8, 10, 3), dtype=np.uint8),
        proprio=rng.standard_normal((steps, 7)).astype(np.float32),
        actions=rng.uniform(-1, 1, size=(steps, 4)).astype(np.float32),
        rewards=rng.standard_normal(steps).astype(np.float32),
        dones=dones,
        policy_versions=np.sort(rng.integers(0, 50, size=steps)).astype(np.int64),
        action_logp=-rng.uniform(0, 3, size=(steps, 4)).astype(np.float32),
        task=f"task_{key % 3}",
        instruction=f"pick up the bowl ☕ number {key}",
        success=bool(key % 2),
        seed=10_000 + key,
    )


def chunked_episode(key: int, steps: int = 5) -> EpisodeRecord:
    """Two cameras, LIBERO's proprio parts, action chunks of 3 (7 dims each), the last one cut short."""
    rng = np.random.default_rng(key)
    record = make_episode(key, steps)
    record.images = rng.integers(0, 256, size=(steps, 2, 8, 8, 3), dtype=np.uint8)
    record.cameras = ("agentview", "wrist")
    record.proprio = rng.standard_normal((steps, 8)).astype(np.float32)
    record.proprio_keys = (("ee_pos", 3), ("ee_ori", 3), ("gripper_states", 2))
    record.actions = rng.uniform(-1, 1, size=(steps, 21)).astype(np.float32)
    record.action_logp = -rng.uniform(0, 3, size=(steps, 21)).astype(np.float32)
    record.action_chunk = 3
    record.env_steps = np.full(steps, 3, np.int32)
    record.env_steps[-1] = 2
    return record


def assert_same_episode(actual: EpisodeRecord, expected: EpisodeRecord) -> None:
    for name in ("images", "proprio", "actions", "rewards", "dones", "policy_versions", "action_logp",
                 "env_steps"):
        got, want = getattr(actual, name), getattr(expected, name)
        if want is None:
            assert got is None, name
            continue
        assert got.dtype == want.dtype and got.shape == want.shape, name
        assert got.tobytes() == want.tobytes(), name
    for name in ("task", "instruction", "success", "seed", "episode_id", "cameras", "action_chunk",
                 "proprio_keys"):
        assert getattr(actual, name) == getattr(expected, name), name
    assert type(actual.success) is bool


def test_round_trip_is_bit_exact_across_shards_and_pending(tmp_path: Path) -> None:
    writer = TrajectoryWriter(tmp_path, rank=0, env_name="libero_spatial", episodes_per_shard=3)
    written = []
    for key in range(7):
        episode_id = writer.write_episode(make_episode(key))
        written.append((episode_id, make_episode(key)))
    assert [episode_id for episode_id, _ in written] == list(range(7))
    # two shards packed, one episode still pending: the reader must see all seven
    assert count_episodes(tmp_path) == 7
    assert [path.name for path in trajectory_files(tmp_path)] == [
        "traj_rank00000_0000.hdf5", "traj_rank00000_0001.hdf5", "ep_6.hdf5"
    ]
    for (episode_id, expected), actual in zip(written, iter_episodes(tmp_path)):
        expected.episode_id = episode_id
        assert_same_episode(actual, expected)
    writer.close()
    assert not (tmp_path / "pending_rank0").exists()
    assert [path.name for path in trajectory_files(tmp_path)][-1] == "traj_rank00000_0002.hdf5"
    assert [episode.episode_id for episode in iter_episodes(tmp_path)] == list(range(7))


def test_shard_has_robomimic_layout_and_attributes(tmp_path: Path) -> None:
    episodes = [make_episode(key, steps=5) for key in (1, 2)]
    with TrajectoryWriter(tmp_path, rank=3, env_name="libero_goal") as writer:
        for episode in episodes:
            writer.write_episode(episode)
    with h5py.File(tmp_path / "traj_rank00003_0000.hdf5", "r") as file:
        data = file["data"]
        assert sorted(data.keys()) == ["demo_0", "demo_1"]
        assert data.attrs["total"] == 10
        assert json.loads(data.attrs["env_args"])["env_name"] == "libero_goal"
        instructions = json.loads(data.attrs["problem_info"])["language_instruction"]
        assert instructions == [episode.instruction for episode in episodes]
        demo = data["demo_1"]
        assert demo["obs/agentview_rgb"].dtype == np.uint8
        assert demo["obs/agentview_rgb"].compression is not None
        assert demo["obs/proprio"].shape == (5, 7)
        for name in ("actions", "rewards", "dones", "policy_versions"):
            assert demo[name].shape[0] == 5
        assert demo.attrs["num_samples"] == 5
        assert demo.attrs["episode_id"] == 1
        assert demo.attrs["task"] == episodes[1].task
        assert bool(demo.attrs["success"]) is episodes[1].success
        assert demo.attrs["policy_version_min"] == episodes[1].policy_versions.min()
        assert demo.attrs["policy_version_max"] == episodes[1].policy_versions.max()


def test_files_use_libero_key_names_and_attributes(tmp_path: Path) -> None:
    kwargs = {"suite": "spatial", "tasks": "0", "cameras": "agentview,wrist", "action_chunk": 3}
    catalogue = ("pick up the bowl", "open the drawer")
    with TrajectoryWriter(tmp_path, 0, "libero", 10, kwargs, catalogue) as writer:
        for key in (4, 5):
            writer.write_episode(dataclasses.replace(chunked_episode(key), instruction=catalogue[0]))
    with h5py.File(tmp_path / "traj_rank00000_0000.hdf5", "r") as file:
        data = file["data"]
        assert json.loads(data.attrs["env_args"]) == {"env_name": "libero", "env_kwargs": kwargs}
        assert data.attrs["env_name"] == "libero"
        problem = json.loads(data.attrs["problem_info"])
        assert problem["problem_name"] == "libero" and problem["language_instruction"] == catalogue[0]
        assert problem["task_catalogue"] == list(catalogue)
        assert data.attrs["total"] == 10 and data.attrs["num_demos"] == 2
        demo = data["demo_0"]
        assert sorted(demo["obs"]) == ["agentview_rgb", "ee_ori", "ee_pos", "eye_in_hand_rgb",
                                       "gripper_states"]
        assert demo["obs/ee_ori"].shape == (5, 3) and demo["obs/gripper_states"].shape == (5, 2)
        assert demo["actions"].shape == (5, 21) and demo.attrs["action_chunk"] == 3
        assert demo["action_logp"].shape == (5, 21) and demo["env_steps"][()].tolist() == [3, 3, 3, 3, 2]
        assert demo.attrs["num_samples"] == 5
    for key, episode in zip((4, 5), iter_episodes(tmp_path)):
        expected = dataclasses.replace(chunked_episode(key), instruction=catalogue[0], episode_id=key - 4)
        assert_same_episode(episode, expected)
    assert episode.num_env_steps == 14


def test_demo_loader_unrolls_chunks_into_one_action_per_simulator_step(tmp_path: Path) -> None:
    with TrajectoryWriter(tmp_path, 0, "libero") as writer:
        writer.write_episode(chunked_episode(7))
    (demo,) = load_demos([tmp_path])
    source = chunked_episode(7)
    assert demo.actions.shape == (14, 7)
    chunks = source.actions.reshape(5, 3, 7)
    assert np.array_equal(demo.actions, np.concatenate([*chunks[:4], chunks[4, :2]]))
    assert demo.observed_at.tolist() == [0, 3, 6, 9, 12]
    # frames as the policy saw them (no rotation), stacked in the order asked for
    assert np.array_equal(demo.frames(("wrist", "agentview")), source.images[:, ::-1])
    assert np.array_equal(demo.proprio, source.proprio)
    assert demo.instruction == source.instruction and demo.success is source.success


def test_reader_accepts_files_written_before_libero_key_names(tmp_path: Path) -> None:
    record = chunked_episode(3)
    record.proprio_keys = ()
    with TrajectoryWriter(tmp_path, 0, "env") as writer:
        writer.write_episode(record)
    with h5py.File(tmp_path / "traj_rank00000_0000.hdf5", "r+") as file:
        demo = file["data/demo_0"]
        demo["obs"].move("eye_in_hand_rgb", "wrist_rgb")
        for name in ("action_logp", "env_steps"):
            del demo[name]
        for name in ("proprio_keys", "action_chunk"):
            del demo.attrs[name]
    (episode,) = iter_episodes(tmp_path)
    assert np.array_equal(episode.images, record.images) and np.array_equal(episode.proprio, record.proprio)
    assert episode.action_logp is None and episode.env_steps is None and episode.action_chunk == 1


def test_reader_orders_by_rank_then_episode_id(tmp_path: Path) -> None:
    with TrajectoryWriter(tmp_path, 1, "env", 2) as late, TrajectoryWriter(tmp_path, 0, "env", 2) as early:
        for key in range(3):
            late.write_episode(make_episode(100 + key))  # rank 1 writes first ...
            early.write_episode(make_episode(key))
    episodes = list(iter_episodes(tmp_path))
    assert [episode.episode_id for episode in episodes] == [0, 1, 2, 0, 1, 2]
    # ... but rank 0 reads first
    assert [episode.seed - 10_000 for episode in episodes] == [0, 1, 2, 100, 101, 102]


def test_resume_continues_ids_and_shard_numbers(tmp_path: Path) -> None:
    with TrajectoryWriter(tmp_path, 0, "env", episodes_per_shard=2) as writer:
        for key in range(3):
            writer.write_episode(make_episode(key))
    with TrajectoryWriter(tmp_path, 0, "env", episodes_per_shard=2) as writer:
        assert writer.next_episode_id == 3
        assert writer.write_episode(make_episode(3)) == 3
        with pytest.raises(ValueError, match="already written"):
            writer.write_episode(dataclasses.replace(make_episode(0), episode_id=1))
    assert [episode.episode_id for episode in iter_episodes(tmp_path)] == [0, 1, 2, 3]
    assert sorted(path.name for path in tmp_path.glob("*.hdf5")) == [
        "traj_rank00000_0000.hdf5", "traj_rank00000_0001.hdf5", "traj_rank00000_0002.hdf5"
    ]


def test_crash_between_shard_rename_and_pending_delete_does_not_duplicate(tmp_path: Path) -> None:
    writer = TrajectoryWriter(tmp_path, 0, "env", episodes_per_shard=10)
    for key in range(3):
        writer.write_episode(make_episode(key))
    saved = tmp_path / "saved_pending"
    shutil.copytree(tmp_path / "pending_rank0", saved)
    writer.close()
    shutil.copytree(saved, tmp_path / "pending_rank0")  # the state a crash right after the rename leaves
    assert [episode.episode_id for episode in iter_episodes(tmp_path)] == [0, 1, 2]

    resumed = TrajectoryWriter(tmp_path, 0, "env", episodes_per_shard=10)
    assert list((tmp_path / "pending_rank0").iterdir()) == []
    assert resumed.write_episode(make_episode(3)) == 3
    resumed.close()
    assert [episode.episode_id for episode in iter_episodes(tmp_path)] == [0, 1, 2, 3]


def test_reading_while_the_writer_packs_finds_packed_episodes_in_their_shard(tmp_path: Path) -> None:
    writer = TrajectoryWriter(tmp_path, 0, "env", episodes_per_shard=10)
    for key in range(3):
        writer.write_episode(make_episode(key))
    episodes = iter_episodes(tmp_path)
    first = next(episodes)  # indexed while all three were pending
    writer.close()  # packs them and deletes the pending files under the reader
    assert [first.episode_id] + [episode.episode_id for episode in episodes] == [0, 1, 2]


def test_leftover_temp_files_are_ignored_then_removed(tmp_path: Path) -> None:
    with TrajectoryWriter(tmp_path, 0, "env", episodes_per_shard=10) as writer:
        writer.write_episode(make_episode(0))
    shard_temp = tmp_path / "traj_rank00000_0001.hdf5.tmp"
    shard_temp.write_bytes(b"\x89HDF half written")
    (tmp_path / "pending_rank0").mkdir()
    pending_temp = tmp_path / "pending_rank0" / "ep_1.hdf5.tmp"
    pending_temp.write_bytes(b"garbage")
    assert count_episodes(tmp_path) == 1
    TrajectoryWriter(tmp_path, 0, "env").close()
    assert not shard_temp.exists() and not pending_temp.exists()


def test_corrupt_shard_raises_error_naming_the_file(tmp_path: Path) -> None:
    with TrajectoryWriter(tmp_path, 0, "env") as writer:
        writer.write_episode(make_episode(0))
    shard = tmp_path / "traj_rank00000_0000.hdf5"
    shard.write_bytes(shard.read_bytes()[:200])
    with pytest.raises(TrajectoryFileError, match="traj_rank00000_0000.hdf5"):
        list(iter_episodes(tmp_path))
    with pytest.raises(FileNotFoundError, match="does_not_exist"):
        count_episodes(tmp_path / "does_not_exist")


def test_invalid_episode_is_rejected_before_anything_is_written(tmp_path: Path) -> None:
    episode = make_episode(0, steps=4)
    episode.actions[2, 1] = 1.5
    with TrajectoryWriter(tmp_path, 0, "env") as writer:
        with pytest.raises(ValueError, match=r"\[-1, 1\]"):
            writer.write_episode(episode)
        bad_dtype = make_episode(1, steps=4)
        bad_dtype.proprio = bad_dtype.proprio.astype(np.float64)
        with pytest.raises(ValueError, match="proprio"):
            writer.write_episode(bad_dtype)
    assert count_episodes(tmp_path) == 0


WRITER_LOOP = """
import sys
from pathlib import Path
import numpy as np
from dvla_hpc.output.demo_loader import load_demos
from dvla_hpc.output.episode import EpisodeRecord
from dvla_hpc.output.trajectory_writer import TrajectoryWriter
{factory}
writer = TrajectoryWriter(Path(sys.argv[1]), int(sys.argv[2]), "crash_env", episodes_per_shard=3)
print("ready", flush=True)
while True:
    writer.write_episode(make_episode(writer.next_episode_id))
"""


def start_writers(directory: Path, ranks: list[int]) -> list[subprocess.Popen[str]]:
    script = WRITER_LOOP.format(factory=inspect.getsource(make_episode))
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(directory), str(rank)],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for rank in ranks
    ]
    for process in processes:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return processes


def test_sigkill_at_random_moments_leaves_readable_files_without_duplicates(tmp_path: Path) -> None:
    chooser = random.Random(20240611)
    total_before = 0
    for _ in range(5):
        writers = start_writers(tmp_path, [0, 1])
        time.sleep(chooser.uniform(0.05, 0.6))
        for process in writers:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
        total = count_episodes(tmp_path)
        assert total >= total_before
        total_before = total
        ids = [(stored.rank, stored.episode_id) for stored in index_episodes(tmp_path)]
        for rank in (0, 1):
            rank_ids = [episode_id for r, episode_id in ids if r == rank]
            assert rank_ids == list(range(len(rank_ids)))
        for path in tmp_path.rglob("*.hdf5"):
            with h5py.File(path, "r") as file:
                assert "data" in file and "episode_ids" in file, path
    assert total_before > 0

    for rank in (0, 1):
        TrajectoryWriter(tmp_path, rank, "crash_env").close()
    assert count_episodes(tmp_path) == total_before
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.glob("pending_rank*"))
    for episode in iter_episodes(tmp_path):
        expected = make_episode(episode.episode_id)
        expected.episode_id = episode.episode_id
        assert_same_episode(episode, expected)
