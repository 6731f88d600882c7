"""SFT warm start: the demo loader on LIBERO's exact layout, behaviour cloning on LIBERO-layout and
dvla_hpc files, bad input refused with exit code 2, and `main --init-from` starting the learner and
the inference side from exactly the SFT weights (single process and MPI)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from dvla_hpc import sft
from dvla_hpc.config.loader import load_config
from dvla_hpc.envs import registry
from dvla_hpc.envs.protocol import EnvSpec
from dvla_hpc.learn.behaviour_cloning import chunk_targets
from dvla_hpc.model.tokens import tokenize
from dvla_hpc.model.vla import PolicyBatch
from dvla_hpc.output.checkpoint import latest_checkpoint, load_checkpoint
from dvla_hpc.output.demo_loader import load_demos
from dvla_hpc.output.episode import EpisodeRecord
from dvla_hpc.output.trajectory_reader import iter_episodes
from dvla_hpc.output.trajectory_writer import TrajectoryWriter
from dvla_hpc.runtime import assembly
from dvla_hpc.runtime.blueprint import Blueprint
from dvla_hpc.runtime.init_from import load_initial_weights

REPO = Path(__file__).resolve().parents[1]
MPIEXEC = Path(sys.executable).parent / "mpiexec"
LIBERO_INSTRUCTION = "pick up the black bowl and place it on the plate"
LIBERO_PROPRIO = (("ee_pos", 3), ("ee_ori", 3), ("gripper_states", 2))
TINY_RUN = ["env.envs_per_sampler=4", "env.workers_per_sampler=0", "learn.group_size=2",
            "learn.groups_per_update=2", "run.progress_bar=false", "output.record_every=1"]


def write_libero_file(path: Path, demos: int = 2, steps: int = 10, size: int = 128, seed: int = 0) -> None:
    """A demo file in the layout of LIBERO's scripts/create_dataset.py (float64 low-dim keys,
    uint8 rewards and dones, upside-down "opengl" frames)."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as file:
        data = file.create_group("data")
        data.attrs["env_name"] = "Libero_Tabletop_Manipulation"
        data.attrs["problem_info"] = json.dumps({"problem_name": "libero_tabletop_manipulation",
                                                 "domain_name": "robosuite",
                                                 "language_instruction": LIBERO_INSTRUCTION})
        data.attrs["macros_image_convention"] = "opengl"
        data.attrs["bddl_file_name"] = "libero/bddl_files/libero_spatial/pick_up_the_black_bowl.bddl"
        data.attrs["env_args"] = json.dumps({"type": 1, "env_name": "Libero_Tabletop_Manipulation",
                                             "problem_name": "libero_tabletop_manipulation",
                                             "bddl_file": "pick_up_the_black_bowl.bddl",
                                             "env_kwargs": {"robots": ["Panda"], "camera_heights": size,
                                                            "camera_widths": size, "control_freq": 20}})
        total = 0
        for i in range(demos):
            demo = data.create_group(f"demo_{i}")
            obs = demo.create_group("obs")
            for key in ("agentview_rgb", "eye_in_hand_rgb"):
                obs.create_dataset(key, data=rng.integers(0, 256, (steps, size, size, 3), dtype=np.uint8))
            ee_states = rng.standard_normal((steps, 6))
            obs.create_dataset("ee_states", data=ee_states)
            obs.create_dataset("ee_pos", data=ee_states[:, :3])
            obs.create_dataset("ee_ori", data=ee_states[:, 3:])
            obs.create_dataset("gripper_states", data=rng.uniform(-0.04, 0.04, (steps, 2)))
            obs.create_dataset("joint_states", data=rng.standard_normal((steps, 7)))
            demo.create_dataset("actions", data=rng.uniform(-1, 1, (steps, 7)))
            states = rng.standard_normal((steps, 45))
            demo.create_dataset("states", data=states)
            demo.create_dataset("robot_states", data=rng.standard_normal((steps, 9)))
            rewards = np.zeros(steps, np.uint8)
            rewards[-1] = 1
            demo.create_dataset("rewards", data=rewards)
            demo.create_dataset("dones", data=rewards.copy())
            demo.attrs["num_samples"] = steps
            demo.attrs["model_file"] = "<mujoco model='libero'/>"
            demo.attrs["init_state"] = states[0]
            total += steps
        data.attrs["num_demos"] = demos
        data.attrs["total"] = total


def libero_like_spec(image_size: int = 128, **_: object) -> EnvSpec:
    """LIBERO's observation and action shapes, without LIBERO (it lives in its own venv)."""
    return EnvSpec(image_shape=(image_size, image_size, 3), proprio_dim=8, action_dim=7, max_episode_steps=50,
                   instructions=(LIBERO_INSTRUCTION,), name="libero_like", cameras=("agentview", "wrist"),
                   proprio_keys=LIBERO_PROPRIO)


@pytest.fixture
def libero_like_env(monkeypatch: pytest.MonkeyPatch) -> None:
    kwargs = ("image_size", "shaped_reward", "max_episode_steps")
    entry = registry._Entry(lambda **_: None, libero_like_spec, kwargs)
    monkeypatch.setitem(registry._REGISTRY, "libero_like", entry)


def test_loader_reads_libero_layout_into_policy_inputs(tmp_path: Path) -> None:
    path = tmp_path / "libero_demo.hdf5"
    write_libero_file(path, steps=6)
    demos = load_demos([path], proprio_keys=[name for name, _ in LIBERO_PROPRIO])
    assert [demo.source.rsplit(":", 1)[1] for demo in demos] == ["demo_0", "demo_1"]
    demo = demos[1]
    with h5py.File(path, "r") as file:
        stored = file["data/demo_1"]
        # LIBERO's frames are upside down; the env adapter rotates robosuite's frames 180 degrees
        assert np.array_equal(demo.images["agentview"], stored["obs/agentview_rgb"][()][:, ::-1, ::-1])
        assert np.array_equal(demo.images["wrist"], stored["obs/eye_in_hand_rgb"][()][:, ::-1, ::-1])
        expected = np.concatenate([stored["obs/ee_pos"][()], stored["obs/ee_ori"][()],
                                   stored["obs/gripper_states"][()]], axis=1).astype(np.float32)
        assert np.array_equal(demo.proprio, expected)
        assert np.array_equal(demo.actions, stored["actions"][()].astype(np.float32))
    assert demo.frames(("agentview", "wrist")).shape == (6, 2, 128, 128, 3)
    assert demo.instruction == LIBERO_INSTRUCTION
    assert demo.observed_at.tolist() == list(range(6))
    assert demo.success is None and demo.rewards[-1] == 1 and demo.dones.dtype == np.bool_

    kept = load_demos([path], key_map=[("agentview_rgb", "agentview"), ("joint_states", "proprio"),
                                       ("gripper_states", "proprio")], upright=False)[0]
    assert list(kept.images) == ["agentview"] and kept.proprio.shape == (6, 9)
    with h5py.File(path, "r") as file:
        assert np.array_equal(kept.images["agentview"], file["data/demo_0/obs/agentview_rgb"][()])


def test_chunk_targets_take_the_next_k_actions_and_repeat_the_last() -> None:
    actions = np.arange(8, dtype=np.float32).reshape(4, 2)
    targets = chunk_targets(actions, np.array([0, 2, 3]), k=3)
    assert targets.tolist() == [[0, 1, 2, 3, 4, 5], [4, 5, 6, 7, 6, 7], [6, 7, 6, 7, 6, 7]]


def test_sft_on_libero_layout_lowers_the_loss(tmp_path: Path, libero_like_env: None,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "libero_demo.hdf5"
    write_libero_file(data, demos=2, steps=8)
    out = tmp_path / "sft"
    code = sft.main(["--data", str(data), "--out", str(out), "--epochs", "6", "--batch-size", "8",
                     "--lr", "0.002", "--key-map", "agentview_rgb=agentview", "eye_in_hand_rgb=wrist",
                     "env.name=libero_like", "env.image_size=128", "model.patch_size=16",
                     "model.action_chunk=2"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "sft_curve.json").read_text())
    assert report["samples"] == 16 and report["action_chunk"] == 2
    assert report["final"]["loss"] < report["curve"][0]["loss"] - 0.2
    ckpt = load_checkpoint(out / "checkpoints" / "ckpt_0.pt")
    assert ckpt.counters["version"] == 0 and "action_chunk: 2" in ckpt.config_yaml
    assert ckpt.model_state["action_queries"].shape[0] == 14  # 2 actions of 7 dims


def tabletop_episode(rng: np.random.Generator, steps: int, chunk: int = 1) -> EpisodeRecord:
    """Tabletop-shaped episode whose actions follow the proprio: something to clone."""
    proprio = rng.uniform(-1, 1, (steps, 4)).astype(np.float32)
    actions = np.tile(-proprio[:, :2], (1, chunk)).astype(np.float32)
    dones = np.zeros(steps, bool)
    dones[-1] = True
    return EpisodeRecord(
        images=rng.integers(0, 256, (steps, 1, 64, 64, 3), dtype=np.uint8), proprio=proprio, actions=actions,
        rewards=np.zeros(steps, np.float32), dones=dones, policy_versions=np.zeros(steps, np.int64),
        action_logp=np.full(actions.shape, -1.0, np.float32), env_steps=np.full(steps, chunk, np.int32),
        action_chunk=chunk, task="tabletop_reach", instruction="reach the red cube",
        success=bool(rng.integers(2)), seed=int(rng.integers(1000)))


def write_tabletop_trajectories(directory: Path, episodes: int = 6) -> None:
    rng = np.random.default_rng(1)
    with TrajectoryWriter(directory, 0, "tabletop_reach", episodes_per_shard=4) as writer:
        for _ in range(episodes):
            writer.write_episode(tabletop_episode(rng, steps=int(rng.integers(3, 8))))


def test_bad_inputs_exit_2_with_the_problem_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    traj = tmp_path / "trajectories"
    write_tabletop_trajectories(traj, episodes=2)
    libero = tmp_path / "libero_demo.hdf5"
    write_libero_file(libero, demos=1, steps=3)
    not_hdf5 = tmp_path / "notes.hdf5"
    not_hdf5.write_text("not a demo file")
    out = str(tmp_path / "out")
    cases = [
        (["--data", str(tmp_path / "absent.hdf5")], "absent.hdf5: no such file or directory"),
        (["--data", str(not_hdf5)], "notes.hdf5: not an HDF5 file"),
        (["--data", str(traj), "--key-map", "front_rgb=agentview"], "no obs/front_rgb"),
        (["--data", str(libero)], "agentview frames are (128, 128, 3), the config's env takes (64, 64, 3)"),
        (["--data", str(libero), "env.image_size=128", "model.patch_size=16",
          "--key-map", "agentview_rgb=agentview", "ee_pos=proprio"],
         "proprio has 3 values, the config's env takes 4"),
        (["--data", str(traj), "model.width=33"], "model.heads"),
        (["--data", str(traj), "--key-map", "agentview_rgb"], "must look like dataset_key=policy_input"),
    ]
    for args, message in cases:
        assert sft.main([*args, "--out", out, "--epochs", "1"]) == 2, args
        err = capsys.readouterr().err
        assert message in err, (args, err)
    assert not (tmp_path / "out" / "checkpoints").exists()

    done = subprocess.run([sys.executable, "-m", "dvla_hpc.sft", "--data", str(not_hdf5), "--out", out],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "not an HDF5 file" in done.stderr and "Traceback" not in done.stderr


def test_init_from_loads_the_exact_weights_with_a_fresh_optimiser(tmp_path: Path) -> None:
    traj = tmp_path / "trajectories"
    write_tabletop_trajectories(traj)
    assert sft.main(["--data", str(traj), "--out", str(tmp_path / "sft"), "--epochs", "2"]) == 0
    saved = load_checkpoint(tmp_path / "sft" / "checkpoints" / "ckpt_0.pt").model_state
    bp = Blueprint.from_config(load_config(None, ["run.init_from=" + str(tmp_path / "sft")]))
    learner = assembly.build_learner(bp, torch.device("cpu"))
    load_initial_weights(learner, str(tmp_path / "sft"))
    state = learner.model.state_dict()
    assert set(state) == set(saved)
    for name, tensor in saved.items():
        assert torch.equal(state[name], tensor), name
    assert learner.version == 0 and not learner.optimizer.state
    assert learner.flat.data_ptr() == next(learner.model.parameters()).data_ptr()  # still the flat buffer


def main_command(out: Path, ranks: int, *extra: str) -> list[str]:
    prefix = [str(MPIEXEC), "-n", str(ranks)] if ranks > 1 else []
    return [*prefix, sys.executable, "-m", "dvla_hpc.main", "--out", str(out), *TINY_RUN, *extra]


def run_main(cmd: list[str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PMI_", "PMIX_"))}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def behaviour_logp(weights: dict, episode: EpisodeRecord) -> np.ndarray:
    """The log-probability of each recorded action token under `weights`, recomputed."""
    bp = Blueprint.from_config(load_config(None, []))
    policy = bp.make_policy().eval()
    policy.load_state_dict(weights)
    cfg = bp.cfg.model
    words = torch.from_numpy(tokenize(episode.instruction, cfg.vocab_size, cfg.max_instruction_tokens))
    batch = PolicyBatch(torch.from_numpy(episode.images), torch.from_numpy(episode.proprio),
                        words.expand(episode.num_steps, -1))
    tokens = bp.bins.to_tokens(torch.from_numpy(episode.actions))
    with torch.no_grad():
        logp = torch.log_softmax(policy(batch).float(), -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return logp.numpy()


@pytest.mark.slow
@pytest.mark.parametrize("ranks", [1, pytest.param(3, marks=pytest.mark.mpi)])
def test_main_init_from_serves_the_sft_weights_from_the_first_rollout(tmp_path: Path, ranks: int) -> None:
    traj = tmp_path / "trajectories"
    write_tabletop_trajectories(traj)
    assert sft.main(["--data", str(traj), "--out", str(tmp_path / "sft"), "--epochs", "3",
                     "--lr", "0.003"]) == 0
    weights = load_checkpoint(tmp_path / "sft" / "checkpoints" / "ckpt_0.pt").model_state
    done = run_main(main_command(tmp_path / "run", ranks, "--init-from", str(tmp_path / "sft"),
                                 "run.total_env_steps=120"))
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["env_steps"] >= 120
    first = [ep for ep in iter_episodes(tmp_path / "run" / "trajectories") if ep.policy_versions.max() == 0]
    assert first, "no episode was played by version 0"
    untrained = Blueprint.from_config(load_config(None, [])).initial_policy().state_dict()
    for episode in first[:4]:  # played by the weights SFT wrote, on the infer side
        np.testing.assert_allclose(episode.action_logp, behaviour_logp(weights, episode), atol=2e-4)
        assert not np.allclose(episode.action_logp, behaviour_logp(untrained, episode), atol=1e-2)
    final = load_checkpoint(latest_checkpoint(tmp_path / "run" / "checkpoints"))
    assert final.counters["env_steps"] == summary["env_steps"] < 1000  # counted from 0, not resumed


def test_main_refuses_an_init_checkpoint_that_does_not_fit(tmp_path: Path) -> None:
    traj = tmp_path / "trajectories"
    write_tabletop_trajectories(traj, episodes=2)
    assert sft.main(["--data", str(traj), "--out", str(tmp_path / "sft"), "--epochs", "1",
                     "model.width=32"]) == 0
    misfit = run_main(main_command(tmp_path / "run", 1, "--init-from", str(tmp_path / "sft")), timeout=120)
    assert misfit.returncode == 2, misfit.stderr[-2000:]
    assert "run.init_from" in misfit.stderr and "does not fit this model config" in misfit.stderr
    assert "Traceback" not in misfit.stderr
    both = run_main(main_command(tmp_path / "run2", 1, "--init-from", str(tmp_path / "sft"), "--resume",
                                 str(tmp_path / "sft")), timeout=120)
    assert both.returncode == 2 and "exclude each other" in both.stderr


@pytest.mark.mpi
@pytest.mark.parametrize("ranks", [1, 3])
def test_a_resume_checkpoint_that_does_not_fit_ends_every_rank_with_exit_2(tmp_path: Path, ranks: int) -> None:
    traj = tmp_path / "trajectories"
    write_tabletop_trajectories(traj, episodes=2)
    assert sft.main(["--data", str(traj), "--out", str(tmp_path / "sft"), "--epochs", "1",
                     "model.width=32"]) == 0
    misfit = run_main(main_command(tmp_path / "run", ranks, "--resume", str(tmp_path / "sft")), timeout=120)
    assert misfit.returncode == 2, misfit.stderr[-2000:]
    assert "run.resume" in misfit.stderr and "does not fit this model config" in misfit.stderr
    assert "Traceback" not in misfit.stderr
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    garbage = run_main(main_command(tmp_path / "run2", ranks, "--resume", str(tmp_path / "garbage.pt")),
                       timeout=120)
    assert garbage.returncode == 2 and "run.resume" in garbage.stderr and "Traceback" not in garbage.stderr


@pytest.mark.libero
def test_sft_on_libero_layout_with_the_real_libero_spec(tmp_path: Path) -> None:
    pytest.importorskip("libero", reason="LIBERO lives in .venv-libero (make install-libero)")
    if "libero" not in registry.known_env_names():
        pytest.skip("env 'libero' is not registered")
    data = tmp_path / "libero_demo.hdf5"
    write_libero_file(data, demos=1, steps=6)
    code = sft.main(["--data", str(data), "--out", str(tmp_path / "sft"), "--epochs", "2",
                     "--key-map", "agentview_rgb=agentview", "eye_in_hand_rgb=wrist", "ee_pos=proprio",
                     "ee_ori=proprio", "gripper_states=proprio",
                     "env.name=libero", "env.tasks=0", "env.image_size=128", "model.patch_size=16"])
    assert code == 0
