"""The raw limit: N processes each stepping and rendering one pixel env with random actions, no learning.

    python -m dvla_hpc.bench.raw_limit [--processes 2] [--seconds 20] [--warmup 3] [--json FILE]

Every process builds make_rendering_gym_env(gym_id, image_size) (the env the Sample Factory and
dvla_hpc runs use), warms up, waits for the others at a barrier, then counts frames for `seconds`:
each step renders a frame, and so does each reset (an agent needs the first frame too).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import queue
import sys
import time
from pathlib import Path


def _count_frames(gym_id: str, image_size: int, warmup_s: float, seconds: float, seed: int,
                  barrier, results) -> None:
    os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        from dvla_hpc.envs.gymnasium_env import make_rendering_gym_env

        env = make_rendering_gym_env(gym_id, image_size)
        env.action_space.seed(seed)
        env.reset(seed=seed)
        env.render()

        def run_for(duration: float) -> tuple[int, int, float]:
            frames = resets = 0
            start = time.perf_counter()
            end = start + duration
            while True:
                _, _, terminated, truncated, _ = env.step(env.action_space.sample())
                env.render()
                frames += 1
                if terminated or truncated:
                    env.reset()
                    env.render()
                    resets += 1
                if frames % 16 == 0 and time.perf_counter() >= end:
                    return frames, resets, time.perf_counter() - start

        run_for(warmup_s)
        barrier.wait(timeout=600)
        frames, resets, elapsed = run_for(seconds)
        env.close()
        results.put({"seed": seed, "pid": os.getpid(), "frames": frames, "episodes": resets,
                     "seconds": round(elapsed, 3), "frames_per_second": round(frames / elapsed, 2)})
    except BaseException as exc:  # the parent reports it; an unreported death would only time out
        barrier.abort()
        results.put({"seed": seed, "pid": os.getpid(), "error": f"{type(exc).__name__}: {exc}"})


def measure_raw_limit(processes: int = 2, seconds: float = 20.0, warmup_s: float = 3.0,
                      gym_id: str = "Reacher-v5", image_size: int = 64) -> dict:
    """Total and per-process frames/s of `processes` spawned processes stepping + rendering one env each."""
    if processes < 1 or seconds <= 0 or warmup_s < 0:
        raise ValueError("need processes >= 1, seconds > 0, warmup_s >= 0")
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    workers = [ctx.Process(target=_count_frames, name=f"raw-limit-{i}",
                           args=(gym_id, image_size, warmup_s, seconds, i, barrier, results))
               for i in range(processes)]
    for worker in workers:
        worker.start()
    per_process = []
    deadline = time.monotonic() + warmup_s + seconds + 300
    try:
        while len(per_process) < processes:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"raw limit: only {len(per_process)} of {processes} processes reported")
            try:
                per_process.append(results.get(timeout=min(remaining, 1.0)))
            except queue.Empty:  # check nobody died silently
                dead = [w for w in workers if w.exitcode not in (None, 0)]
                if dead and results.empty():
                    raise RuntimeError(f"raw limit: {dead[0].name} died with exit code {dead[0].exitcode}")
    finally:
        for worker in workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.terminate()
                worker.join()
    errors = [r["error"] for r in per_process if "error" in r]
    if errors:
        raise RuntimeError(f"raw limit: a process failed: {errors[0]}")
    per_process.sort(key=lambda r: r["seed"])
    return {
        "gym_id": gym_id,
        "image_size": image_size,
        "processes": processes,
        "seconds": seconds,
        "warmup_s": warmup_s,
        "frames_per_second": round(sum(r["frames_per_second"] for r in per_process), 2),
        "per_process": per_process,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--gym-id", default="Reacher-v5")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    result = measure_raw_limit(args.processes, args.seconds, args.warmup, args.gym_id, args.image_size)
    per = ", ".join(f"{r['frames_per_second']:.1f}" for r in result["per_process"])
    print(f"raw limit {result['gym_id']} {args.image_size}x{args.image_size}: "
          f"{result['frames_per_second']:.1f} frames/s total ({per} per process, {args.seconds:g} s)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
