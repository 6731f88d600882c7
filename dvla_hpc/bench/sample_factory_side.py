"""Sample Factory 2.1.1 APPO on Reacher-v5 from 64x64 pixels; runs INSIDE .venv-sf, writes a JSON result.

    .venv-sf/bin/python -m dvla_hpc.bench.sample_factory_side --out DIR [--seconds 150] [--warmup 30]

The env is make_rendering_gym_env(gym_id, image_size) (the one the raw-limit and dvla_hpc runs
use), wrapped so the observation is only the rendered frame, as (3, H, W) uint8 for SF's default
CHW pixel format; Reacher's own 50-step time limit ends episodes; no frame skip.

Stopping: SF 2.1.1 accepts --train_for_seconds but never advances the runner's
total_train_seconds, so the flag alone never stops a run. An AlgoObserver sets it from the
runner's start time after each training iteration; SF's own end-of-training check then stops the
run the normal way (final checkpoint, components stopped).

Throughput: the runner (this process) logs "Fps is ... Total num frames: N ... Samples: M" every
5 s; N counts env frames the learner has received (SF's headline FPS), M the samples the rollout
workers collected. A log handler records (time, N, M) from each of those lines; the steady-state rate is the
slope over the window that starts `warmup` seconds after the first frames were counted and ends at
the last report, so process start, env creation and the first updates are left out.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from importlib.metadata import version
from pathlib import Path

import gymnasium
import numpy as np

from dvla_hpc.bench.reacher import steady_from_points  # a stdlib-only module

os.environ.setdefault("MUJOCO_GL", "egl")  # before mujoco loads (dvla_hpc.envs also sees to it)

ENV_NAME = "reacher_pixels"


class PixelOnly(gymnasium.Wrapper):
    """Observation = the rendered frame, (3, H, W) uint8; reward, termination and info untouched."""

    def __init__(self, env: gymnasium.Env, image_size: int):
        super().__init__(env)
        self.observation_space = gymnasium.spaces.Box(0, 255, (3, image_size, image_size), np.uint8)

    def reset(self, *, seed=None, options=None):
        _, info = self.env.reset(seed=seed, options=options)
        return self._frame(), info

    def step(self, action):
        _, reward, terminated, truncated, info = self.env.step(action)
        return self._frame(), reward, terminated, truncated, info

    def _frame(self) -> np.ndarray:
        return self.env.render().transpose(2, 0, 1)


def make_reacher_pixels(full_env_name: str, cfg=None, env_config=None, render_mode=None) -> gymnasium.Env:
    """SF's env factory (module level so spawned SF processes can unpickle it)."""
    from dvla_hpc.envs.gymnasium_env import make_rendering_gym_env

    gym_id = getattr(cfg, "bench_gym_id", "Reacher-v5") if cfg is not None else "Reacher-v5"
    image_size = int(getattr(cfg, "bench_image_size", 64)) if cfg is not None else 64
    return PixelOnly(make_rendering_gym_env(gym_id, image_size), image_size)


def add_bench_env_args(_env: str, parser: argparse.ArgumentParser, evaluation: bool = False) -> None:
    parser.add_argument("--bench_gym_id", default="Reacher-v5", type=str)
    parser.add_argument("--bench_image_size", default=64, type=int)


class FpsRecorder(logging.Handler):
    """Collects (time, learner frames, samples collected) from the runner's periodic 'Fps is' log line."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.points: list[tuple[float, int, int]] = []
        self.fps_lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not isinstance(record.msg, str) or not record.msg.startswith("Fps is"):
            return
        try:
            _, frames, _, samples, _ = record.args
            self.points.append((record.created, int(frames), int(samples)))
            self.fps_lines.append(record.getMessage())
        except (TypeError, ValueError):
            pass


def wall_clock_stop():
    """An AlgoObserver that keeps runner.total_train_seconds current, so --train_for_seconds works."""
    from sample_factory.algo.runners.runner import AlgoObserver

    class WallClockStop(AlgoObserver):
        def on_training_step(self, runner, training_iteration_since_resume: int) -> None:
            runner.total_train_seconds = time.time() - runner.start_time

    return WallClockStop()


def sf_argv(args: argparse.Namespace) -> list[str]:
    argv = [
        f"--env={ENV_NAME}",
        f"--experiment={args.experiment}",
        f"--train_dir={args.out / 'train_dir'}",
        "--restart_behavior=overwrite",
        "--algo=APPO",
        "--async_rl=True",
        "--serial_mode=False",
        "--device=cpu",
        f"--seed={args.seed}",
        f"--num_workers={args.num_workers}",
        f"--num_envs_per_worker={args.envs_per_worker}",
        f"--worker_num_splits={args.worker_num_splits}",
        f"--batch_size={args.batch_size}",
        "--num_batches_per_epoch=1",
        "--num_epochs=1",
        f"--rollout={args.rollout}",
        f"--use_rnn={args.use_rnn}",
        "--encoder_conv_architecture=convnet_simple",
        "--obs_scale=255.0",
        "--normalize_input=False",
        "--env_frameskip=1",
        f"--train_for_seconds={int(args.seconds)}",
        f"--bench_image_size={args.image_size}",
        f"--bench_gym_id={args.gym_id}",
        "--with_wandb=False",
        "--save_every_sec=100000",
    ]
    if args.frames:
        argv.append(f"--train_for_env_steps={args.frames}")
    return argv + list(args.sf_args)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="SF train_dir parent; result.json goes here")
    parser.add_argument("--result", type=Path, help="result JSON (default OUT/result.json)")
    parser.add_argument("--seconds", type=float, default=150.0, help="SF --train_for_seconds")
    parser.add_argument("--frames", type=int, default=0, help="also stop after this many env frames (0: no)")
    parser.add_argument("--warmup", type=float, default=30.0,
                        help="seconds after the first counted frames left out of the steady-state rate")
    parser.add_argument("--gym-id", default="Reacher-v5")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--envs-per-worker", type=int, default=8)
    parser.add_argument("--worker-num-splits", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--rollout", type=int, default=32)
    parser.add_argument("--use-rnn", default="False", choices=["True", "False"],
                        help="SF's default is a GRU core; off here, as dvla_hpc's policy is feed-forward")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--experiment", default="reacher_pixels_appo")
    parser.add_argument("sf_args", nargs="*", help="extra Sample Factory arguments (--key=value), appended last")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    result_path = args.result or args.out / "result.json"

    from sample_factory.algo.utils.misc import ExperimentStatus
    from sample_factory.cfg.arguments import parse_full_cfg, parse_sf_args
    from sample_factory.envs.env_utils import register_env
    from sample_factory.train import make_runner
    from sample_factory.utils.utils import log as sf_log

    register_env(ENV_NAME, make_reacher_pixels)
    argv_sf = sf_argv(args)
    parser, _ = parse_sf_args(argv=argv_sf, evaluation=False)
    add_bench_env_args(ENV_NAME, parser)
    cfg = parse_full_cfg(parser, argv=argv_sf)

    recorder = FpsRecorder()
    sf_log.addHandler(recorder)
    started = time.time()
    status = None
    error = None
    try:
        cfg, runner = make_runner(cfg)
        runner.register_observer(wall_clock_stop())
        status = runner.init()
        if status == ExperimentStatus.SUCCESS:
            status = runner.run()
    except BaseException as exc:  # still write what was measured
        error = f"{type(exc).__name__}: {exc}"
    finally:
        sf_log.removeHandler(recorder)
    wall = time.time() - started
    points = recorder.points
    rate = steady_from_points([(t, frames) for t, frames, _ in points], args.warmup)
    rate["samples_per_second"] = steady_from_points([(t, samples) for t, _, samples in points],
                                                    args.warmup)["frames_per_second"]
    last = points[-1] if points else (started, 0, 0)
    result = {
        "framework": "sample_factory",
        "versions": {name: version(dist) for name, dist in (
            ("sample_factory", "sample-factory"), ("torch", "torch"), ("numpy", "numpy"),
            ("mujoco", "mujoco"), ("gymnasium", "gymnasium"))},
        "env": {"gym_id": args.gym_id, "image_size": args.image_size, "observation": "pixels (3,H,W) uint8",
                "frameskip": 1},
        "sf_argv": argv_sf,
        "status": None if status is None else int(status),
        "error": error,
        "wall_seconds": round(wall, 2),
        "env_frames": last[1],
        "samples_collected": last[2],
        "warmup_s": args.warmup,
        "steady": rate,
        "frames_per_second": rate["frames_per_second"],
        "overall_frames_per_second": round(last[1] / wall, 2) if wall > 0 else None,
        "reports": [{"t": round(t - started, 2), "frames": f, "samples": s} for t, f, s in points],
        "last_fps_line": recorder.fps_lines[-1] if recorder.fps_lines else None,
    }
    result_path.parent.mkdir(parents=True, exist_ok=True)
    result_path.write_text(json.dumps(result, indent=2) + "\n")
    fps = rate["frames_per_second"]
    print(f"[sample_factory] steady {fps if fps is not None else 'n/a'} frames/s over "
          f"{rate['window_s']} s; {last[1]} frames in {wall:.1f} s; wrote {result_path}", flush=True)
    if error is not None:
        print(f"[sample_factory] run failed: {error}", file=sys.stderr)
        return 1
    return 0 if status == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
