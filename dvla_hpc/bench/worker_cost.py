"""Benchmark: CPU per rendered frame of an env worker, against the raw-limit loop. Reacher-v5 at
64x64 pixels, three ways in turn, in one process and its workers: the raw loop (one gym env,
step + render), a VectorEnv stepping 16 envs inline, and a VectorEnv with 2 worker processes (8
envs each, two halves stepped alternately as the sample lane does; the workers' CPU from psutil).
Each way runs with llvmpipe drawing in the calling thread (LP_NUM_THREADS=0, the package's default)
and with its pool of one thread per core, in separate processes.

    python -m dvla_hpc.bench worker_cost [--rounds 4] [--frames 960] [--out bench_out/worker_cost]"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from dvla_hpc.bench.runs import BENCH_ENV, write_results

ENVS, WORKERS = 16, 2


def cpu_seconds(process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def measure(rounds: int, frames: int) -> dict:
    """CPU-ms per frame of each way, summed over `rounds` alternating rounds of `frames` frames."""
    import numpy as np
    import psutil

    from dvla_hpc.envs.gymnasium_env import make_rendering_gym_env
    from dvla_hpc.envs.vector import VectorEnv

    kwargs = {"gym_id": "Reacher-v5", "image_size": 64}
    rng = np.random.default_rng(0)
    me = psutil.Process()
    raw = make_rendering_gym_env("Reacher-v5", 64)
    raw.action_space.seed(0)
    raw.reset(seed=0)
    raw.render()

    def raw_loop() -> float:
        before = cpu_seconds(me)
        for _ in range(frames):
            _, _, terminated, truncated, _ = raw.step(raw.action_space.sample())
            raw.render()
            if terminated or truncated:
                raw.reset()
                raw.render()
        return cpu_seconds(me) - before

    def step_halves(vec: VectorEnv) -> None:
        halves = np.arange(ENVS).reshape(2, -1)
        for r in range(frames // ENVS):
            for half in halves:
                actions = rng.uniform(-1, 1, (len(half), vec.spec.action_dim)).astype(np.float32)
                vec.step_async(half, actions, half + r * ENVS)
            for half in halves:
                vec.wait(half)

    inline, workers = VectorEnv("gymnasium", kwargs, ENVS, 0), VectorEnv("gymnasium", kwargs, ENVS, WORKERS)
    try:
        for vec in (inline, workers):
            vec.reset_async(np.arange(ENVS), np.arange(ENVS))
            vec.wait()
        procs = [psutil.Process(pid) for pid in workers.worker_pids()]

        def inline_loop() -> float:
            before = cpu_seconds(me)
            step_halves(inline)
            return cpu_seconds(me) - before

        def worker_loop() -> tuple[float, float]:
            before, parent = sum(cpu_seconds(p) for p in procs), cpu_seconds(me)
            step_halves(workers)
            return sum(cpu_seconds(p) for p in procs) - before, cpu_seconds(me) - parent

        totals = dict.fromkeys(("raw_loop", "inline", "workers", "parent_of_workers"), 0.0)
        for _ in range(rounds):
            totals["raw_loop"] += raw_loop()
            totals["inline"] += inline_loop()
            in_workers, in_parent = worker_loop()
            totals["workers"] += in_workers
            totals["parent_of_workers"] += in_parent
    finally:
        inline.close()
        workers.close()
        raw.close()
    return {way: round(1000 * seconds / (rounds * frames), 3) for way, seconds in totals.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--frames", type=int, default=960, help="frames of each way in each round")
    parser.add_argument("--out", default="bench_out/worker_cost")
    args = parser.parse_args(argv)
    results = {}
    for label, threads in (("calling thread", "0"), ("thread pool", str(os.cpu_count()))):
        done = subprocess.run([sys.executable, "-m", "dvla_hpc.bench.worker_cost", "--measure",
                               str(args.rounds), str(args.frames)], capture_output=True, text=True,
                              timeout=1800, env={**os.environ, **BENCH_ENV, "LP_NUM_THREADS": threads})
        if done.returncode != 0:
            print(f"the {label} run failed:\n{done.stderr[-3000:]}", file=sys.stderr)
            return 1
        results[label] = {"LP_NUM_THREADS": threads, **json.loads(done.stdout.splitlines()[-1])}
        print(f"llvmpipe {label:<15} " + ", ".join(f"{way} {ms:.3f}" for way, ms in results[label].items()
                                                   if way != "LP_NUM_THREADS") + "  (CPU-ms per frame)", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_results(out / "results.json", {"command": ["python", "-m", "dvla_hpc.bench", "worker_cost", *(argv or [])],
                                         "envs": ENVS, "workers": WORKERS, "results": results})
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--measure"]:
        print(json.dumps(measure(int(sys.argv[2]), int(sys.argv[3]))))
        sys.exit(0)
    sys.exit(main(sys.argv[1:]))
