"""Metrics log, checkpoints, RNG capture and run summary: round trips and survival of SIGKILL."""
from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from multiprocessing.synchronize import Event
from pathlib import Path

import numpy as np
import pytest
import torch

from dvla_hpc.output.checkpoint import (
    CheckpointError,
    capture_rng_state,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from dvla_hpc.output.metrics_log import MetricsLog, read_metrics
from dvla_hpc.output.summary import format_summary_table, read_summary, write_summary

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_metrics_are_plain_json_and_survive_a_partial_last_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    with MetricsLog(path) as log:
        log.log({"step": np.int64(1), "loss": np.float32(0.5), "lag": np.array([1, 2]), "ok": np.bool_(True)})
        log.log({"step": 2, "loss": 0.25})
    with open(path, "a") as file:
        file.write('{"step": 3, "loss"')  # a crash in the middle of a line
    rows = read_metrics(path)
    assert rows == [{"step": 1, "loss": 0.5, "lag": [1, 2], "ok": True}, {"step": 2, "loss": 0.25}]
    assert type(rows[0]["step"]) is int and type(rows[0]["loss"]) is float

    with MetricsLog(path) as log:  # reopening drops the partial line instead of gluing onto it
        log.log({"step": 3, "loss": 0.125})
    assert [row["step"] for row in read_metrics(path)] == [1, 2, 3]


def test_metrics_complete_last_line_without_newline_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}')
    with MetricsLog(path) as log:
        log.log({"step": 3})
    assert [row["step"] for row in read_metrics(path)] == [1, 2, 3]


def test_metrics_corrupt_middle_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl: line 2"):
        read_metrics(path)
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        read_metrics(tmp_path / "missing.jsonl")


def test_checkpoint_round_trip_with_weights_only(tmp_path: Path) -> None:
    model = torch.nn.Linear(4, 3)
    # what AdamW.state_dict() holds after a step, built by hand: constructing a torch optimizer
    # costs seconds of lazy imports on this machine
    optimizer_state = {
        "state": {
            index: {
                "step": torch.tensor(3.0),
                "exp_avg": torch.randn_like(p),
                "exp_avg_sq": torch.rand_like(p),
            }
            for index, p in enumerate(model.parameters())
        },
        "param_groups": [
            {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "amsgrad": False, "foreach": None,
             "params": [0, 1]}
        ],
    }
    path = checkpoint_path(tmp_path, 7)
    save_checkpoint(path, model.state_dict(), optimizer_state, {"step": 7, "lr": 1e-3}, capture_rng_state())

    loaded = load_checkpoint(path)
    assert loaded.counters == {"step": 7, "lr": 1e-3}
    assert type(loaded.counters["step"]) is int
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.model_state[name], tensor)
    assert loaded.optimizer_state["param_groups"] == optimizer_state["param_groups"]
    for index, moments in optimizer_state["state"].items():
        for name, tensor in moments.items():
            assert torch.equal(loaded.optimizer_state["state"][index][name], tensor)
    assert not list(tmp_path.glob("*.tmp"))


def test_rng_state_restores_torch_numpy_and_python_streams(tmp_path: Path) -> None:
    random.gauss(0, 1)  # leaves a cached second gaussian in python's state
    np.random.standard_normal()  # and in numpy's
    path = tmp_path / "ckpt_1.pt"
    save_checkpoint(path, {}, {}, {}, capture_rng_state())
    expected = (torch.rand(5), np.random.standard_normal(5), [random.gauss(0, 1) for _ in range(3)])
    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    restore_rng_state(load_checkpoint(path).rng)
    actual = (torch.rand(5), np.random.standard_normal(5), [random.gauss(0, 1) for _ in range(3)])
    assert torch.equal(actual[0], expected[0])
    assert np.array_equal(actual[1], expected[1])
    assert actual[2] == expected[2]


def test_missing_and_corrupt_checkpoints_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="ckpt_5.pt"):
        load_checkpoint(tmp_path / "ckpt_5.pt")
    path = tmp_path / "ckpt_6.pt"
    save_checkpoint(path, {"w": torch.ones(1000)}, {}, {"step": 6}, {})
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CheckpointError, match="ckpt_6.pt: corrupt"):
        load_checkpoint(path)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.ones(2)}, foreign)
    with pytest.raises(CheckpointError, match="not a dvla_hpc checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(TypeError, match="counter 'step'"):
        save_checkpoint(tmp_path / "ckpt_7.pt", {}, {}, {"step": torch.tensor(7)}, {})


def test_latest_checkpoint_picks_highest_step_and_ignores_temp_files(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path / "nothing_here") is None
    for step in (9, 10, 2):
        save_checkpoint(checkpoint_path(tmp_path, step), {}, {}, {"step": step}, {})
    (tmp_path / "ckpt_11.pt.tmp").write_bytes(b"half")
    assert latest_checkpoint(tmp_path) == tmp_path / "ckpt_10.pt"  # numeric, not lexicographic


WEIGHT_SIZE = 250_000


def checkpoint_loop(directory: Path, ready: Event) -> None:
    """Save checkpoints forever, resuming from the newest, keeping the last three."""
    latest = latest_checkpoint(directory)
    step = load_checkpoint(latest).counters["step"] + 1 if latest else 0
    while True:
        weights = {"w": torch.full((WEIGHT_SIZE,), float(step))}
        save_checkpoint(checkpoint_path(directory, step), weights, {}, {"step": step}, capture_rng_state())
        checkpoint_path(directory, step - 3).unlink(missing_ok=True)
        ready.set()  # from here on at least one checkpoint of this run exists
        step += 1


METRICS_LOOP = """
import sys
from dvla_hpc.output.metrics_log import MetricsLog, read_metrics
from pathlib import Path
path = Path(sys.argv[1])
i = read_metrics(path)[-1]["i"] + 1 if path.exists() and read_metrics(path) else 0
log = MetricsLog(path)
print("ready", flush=True)
while True:
    log.log({"i": i, "padding": "x" * 3000})
    i += 1
"""


def run_and_kill(script: str, argument: Path, delay: float) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(argument)], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    time.sleep(delay)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


def test_sigkill_during_checkpoint_saves_leaves_latest_loadable(tmp_path: Path) -> None:
    # a forkserver imports torch once; each killed saver is a cheap fork of it
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "dvla_hpc.output.checkpoint"])
    chooser = random.Random(7)
    previous_step = -1
    for _ in range(4):
        ready = context.Event()
        saver = context.Process(target=checkpoint_loop, args=(tmp_path, ready))
        saver.start()
        assert ready.wait(timeout=60)
        time.sleep(chooser.uniform(0.05, 0.5))
        os.kill(saver.pid, signal.SIGKILL)
        saver.join()
        latest = latest_checkpoint(tmp_path)
        assert latest is not None
        for path in tmp_path.glob("ckpt_*.pt"):
            loaded = load_checkpoint(path)
            step = loaded.counters["step"]
            assert path.name == f"ckpt_{step}.pt"
            assert torch.equal(loaded.model_state["w"], torch.full((WEIGHT_SIZE,), float(step)))
        latest_step = load_checkpoint(latest).counters["step"]
        assert latest_step > previous_step  # each run resumed after the last one and saved at least once
        previous_step = latest_step


def test_sigkill_during_metrics_logging_leaves_complete_lines(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    chooser = random.Random(3)
    for _ in range(3):
        run_and_kill(METRICS_LOOP, path, chooser.uniform(0.05, 0.3))
        indices = [row["i"] for row in read_metrics(path)]
        assert indices == list(range(len(indices)))
    assert len(indices) > 0


def test_summary_is_written_atomically_and_formatted_as_aligned_table(tmp_path: Path) -> None:
    summary = {
        "episodes": 120,
        "success_rate": np.float32(0.4567891),
        "lanes": {"infer": {"busy": 0.91, "idle": 0.09}, "learn": {"busy": 0.5}},
        "resumed": False,
    }
    path = tmp_path / "summary.json"
    write_summary(path, summary)
    assert read_summary(path)["lanes"]["infer"]["busy"] == 0.91
    assert json.loads(path.read_text())["success_rate"] == pytest.approx(0.4567891)
    assert not list(tmp_path.glob("*.tmp"))

    lines = format_summary_table(summary).splitlines()
    keys = [line.split()[0] for line in lines]
    assert keys == [
        "episodes", "success_rate", "lanes.infer.busy", "lanes.infer.idle", "lanes.learn.busy", "resumed"
    ]
    value_columns = {len(line) - len(line.split()[-1]) for line in lines}
    assert len(value_columns) == 1  # every value starts in the same column
    assert lines[1].split()[-1] == "0.4568" and lines[-1].split()[-1] == "False"


def test_prune_keeps_the_newest_k_by_step_not_by_name(tmp_path):
    from dvla_hpc.output.checkpoint import prune_checkpoints
    for step in (2, 10, 9, 30):
        (tmp_path / f"ckpt_{step}.pt").write_bytes(b"x")
    (tmp_path / "ckpt_1.pt.tmp").write_bytes(b"x")
    removed = prune_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in removed) == ["ckpt_2.pt", "ckpt_9.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_1.pt.tmp", "ckpt_10.pt", "ckpt_30.pt"]
    assert prune_checkpoints(tmp_path, keep=0) == []


def test_checkpoint_schedule_by_updates_and_by_time():
    from dvla_hpc.lanes.learn import CheckpointSchedule
    now = [0.0]
    by_updates = CheckpointSchedule(every_updates=3, every_s=0, clock=lambda: now[0])
    assert [u for u in range(1, 10) if by_updates.due(u)] == [3, 6, 9]
    by_time = CheckpointSchedule(every_updates=0, every_s=10, clock=lambda: now[0])
    due = []
    for update in range(1, 8):
        now[0] += 4.0
        if by_time.due(update):
            due.append(update)
    assert due == [3, 6]  # at 12 s and 24 s: the clock restarts at each checkpoint
    never = CheckpointSchedule(0, 0, clock=lambda: now[0])
    now[0] += 1e6
    assert not never.due(5)


def test_resume_of_a_run_directory_continues_in_it(tmp_path):
    from dvla_hpc.config.loader import load_config
    from dvla_hpc.runtime.run_dir import prepare_run_dir, resolve_run_dir, resumed_config
    run = tmp_path / "run"
    prepare_run_dir(load_config(None, ["model.width=32"]), run)
    (run / "checkpoints").mkdir()
    for source in (run, run / "checkpoints"):
        cfg = load_config(resumed_config(str(source)), [f"run.resume={source}"])
        assert cfg.model.width == 32 and resolve_run_dir(cfg) == run
    from_file = load_config(None, [f"run.resume={run / 'checkpoints' / 'ckpt_3.pt'}"])
    assert resolve_run_dir(from_file).parent == Path("runs")  # a file starts a new directory
    assert resumed_config(str(tmp_path / "elsewhere")) is None
    explicit = load_config(None, [f"run.resume={run}", f"run.out={tmp_path / 'other'}"])
    assert resolve_run_dir(explicit) == tmp_path / "other"
