"""LIBERO env steps per second on one core: a bare OffScreenRenderEnv loop against dvla_hpc's VectorEnv.

    .venv-libero/bin/python -m dvla_hpc.bench libero_steps [--out bench_out/libero_steps] [--steps 60]
        [--suite spatial] [--task 0]

For 1 and 2 cameras at 128 and 224 pixels, three loops side by side:
  bare    LIBERO's OffScreenRenderEnv as the published evaluations step it (its observation dict,
          images included), in a spawned process; the step is timed there;
  vector  VectorEnv("libero", one env, workers_per_sampler=1), timed from here (step_async + wait);
  fast    the same VectorEnv with fast_render=True (no multisampling, shadows or reflections).
Each loop's process is pinned to CPU 0, llvmpipe renders on one thread (LP_NUM_THREADS=1) and BLAS
is single-threaded, so each figure is one core's worth. The loops take their steps in turn (bare,
vector, fast, bare, ...), so a load that comes and goes on a shared machine hits all three alike.
Each starts from the initial state VectorEnv's seed 0 picks, after LIBERO's settling steps, takes 3
untimed steps, then `steps` timed steps of the same random actions. Goal (issue 8): vector >= 90% of bare.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import struct
import sys
import time
from pathlib import Path

import numpy as np

from dvla_hpc.bench.runs import write_results

CASES = (("agentview", 128), ("agentview,wrist", 128), ("agentview", 224), ("agentview,wrist", 224))
ONE_CORE_ENV = {"LP_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                "MKL_NUM_THREADS": "1", "MUJOCO_GL": "egl"}
BENCH_CPU = 0
WARMUP_STEPS = 3
GOAL_RATIO = 0.9
_STOP = b"stop"
_SECONDS = struct.Struct("<d")


def _actions(steps: int) -> np.ndarray:
    return np.random.default_rng(0).uniform(-1.0, 1.0, size=(WARMUP_STEPS + steps, 7))


def _bare_loop(conn, suite: str, task: int, cameras: str, size: int) -> None:
    """In a spawned process: one OffScreenRenderEnv, stepped with each action (7 float64) it is sent;
    answers each with the step's seconds. Its first message is JSON: ready (with setup_s) or the error."""
    try:
        os.sched_setaffinity(0, {BENCH_CPU})
        from libero.libero.envs import OffScreenRenderEnv

        from dvla_hpc.envs.libero_env import (
            CAMERAS, SETTLE_ACTION, SETTLE_STEPS, benchmark_suite, draw_episode, initial_states,
        )

        started = time.perf_counter()
        env = OffScreenRenderEnv(bddl_file_name=benchmark_suite(suite).get_task_bddl_file_path(task),
                                 camera_names=[CAMERAS[c] for c in cameras.split(",")],
                                 camera_heights=size, camera_widths=size)
        env.seed(0)
        env.reset()
        states = initial_states(suite, task)
        env.set_init_state(states[draw_episode(0, 1, len(states))[1]])
        for _ in range(SETTLE_STEPS):
            env.step(SETTLE_ACTION)
        conn.send_bytes(json.dumps({"setup_s": time.perf_counter() - started}).encode())
    except BaseException as exc:
        conn.send_bytes(json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode())
        return
    while (message := conn.recv_bytes()) != _STOP:
        action = np.frombuffer(message, dtype=np.float64)
        started = time.perf_counter()
        env.step(action)
        conn.send_bytes(_SECONDS.pack(time.perf_counter() - started))
    env.close()


class BareLoop:
    """The parent's handle on _bare_loop."""

    def __init__(self, suite: str, task: int, cameras: str, size: int) -> None:
        context = mp.get_context("spawn")
        self._conn, child = context.Pipe(duplex=True)
        self._process = context.Process(target=_bare_loop, args=(child, suite, task, cameras, size),
                                        name="libero-bare-loop", daemon=True)
        self._process.start()
        child.close()
        try:
            ready = json.loads(self._conn.recv_bytes())
        except EOFError:
            self._process.join(5)
            ready = {"error": f"it died with exit code {self._process.exitcode}"}
        if "error" in ready:
            self.close()
            raise RuntimeError(f"bare LIBERO loop ({cameras}, {size}px): {ready['error']}")
        self.setup_s = ready["setup_s"]

    def step(self, action: np.ndarray) -> float:
        self._conn.send_bytes(np.asarray(action, dtype=np.float64).tobytes())
        return _SECONDS.unpack(self._conn.recv_bytes())[0]

    def close(self) -> None:
        if self._process.is_alive():
            try:
                self._conn.send_bytes(_STOP)
            except OSError:
                pass
            self._process.join(30)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join()


def _pinned_vector_env(kwargs: dict):
    from dvla_hpc.envs.vector import VectorEnv

    vector = VectorEnv("libero", kwargs, num_envs=1, num_workers=1, step_timeout_s=300.0)
    try:
        for pid in vector.worker_pids():
            os.sched_setaffinity(pid, {BENCH_CPU})
        vector.reset_async(np.array([0]), np.array([0]))
        vector.wait()
    except BaseException:
        vector.close()
        raise
    return vector


def _timed_vector_step(vector, action: np.ndarray) -> float:
    started = time.perf_counter()
    vector.step_async(np.array([0]), action[None].astype(np.float32), np.array([0]))
    vector.wait()
    if vector.done[0]:
        raise RuntimeError("an episode ended during the benchmark: the figures would include a reset")
    return time.perf_counter() - started


def measure_case(suite: str, task: int, cameras: str, size: int, steps: int) -> dict:
    kwargs = dict(suite=suite, tasks=str(task), cameras=cameras, image_size=size)
    bare = BareLoop(suite, task, cameras, size)
    try:
        fast_kwargs = {**kwargs, "fast_render": True}
        with _pinned_vector_env(kwargs) as vector, _pinned_vector_env(fast_kwargs) as fast:
            seconds = np.zeros(3)
            for index, action in enumerate(_actions(steps)):
                taken = (bare.step(action), _timed_vector_step(vector, action),
                         _timed_vector_step(fast, action))
                if index >= WARMUP_STEPS:
                    seconds += taken
    finally:
        bare.close()
    bare_rate, vector_rate, fast_rate = (steps / s for s in seconds)
    return {"cameras": cameras, "image_size": size, "bare_steps_per_s": bare_rate,
            "vector_steps_per_s": vector_rate, "fast_render_steps_per_s": fast_rate,
            "vector_over_bare": vector_rate / bare_rate, "fast_over_standard": fast_rate / vector_rate,
            "bare_setup_s": bare.setup_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench_out/libero_steps")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--suite", default="spatial")
    parser.add_argument("--task", type=int, default=0)
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be positive")
    os.environ.update(ONE_CORE_ENV)  # spawned processes (the bare loop, VectorEnv's workers) inherit it
    from dvla_hpc.envs.libero_env import LiberoEnv

    spec = LiberoEnv.spec_for(suite=args.suite, tasks=str(args.task))  # a bad suite/task fails here, fast
    print(f"LIBERO {args.suite} task {args.task} ({spec.instructions[0]!r}): {args.steps} timed steps per "
          f"loop, every loop on CPU {BENCH_CPU}, llvmpipe on one thread, steps taken in turn")
    print(f"{'cameras':<16} {'px':>4} {'bare/s':>8} {'vector/s':>9} {'vector/bare':>11} "
          f"{'fast/s':>8} {'fast/std':>8}", flush=True)
    rows = []
    for cameras, size in CASES:
        row = measure_case(args.suite, args.task, cameras, size, args.steps)
        rows.append(row)
        print(f"{cameras:<16} {size:>4} {row['bare_steps_per_s']:>8.2f} {row['vector_steps_per_s']:>9.2f} "
              f"{row['vector_over_bare']:>11.2f} {row['fast_render_steps_per_s']:>8.2f} "
              f"{row['fast_over_standard']:>8.2f}", flush=True)
    worst = min(r["vector_over_bare"] for r in rows)
    print(f"worst vector/bare {worst:.2f} (goal >= {GOAL_RATIO})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_results(out / "libero_steps.json", {
        "suite": args.suite, "task": args.task, "instruction": spec.instructions[0], "steps": args.steps,
        "warmup_steps": WARMUP_STEPS, "cpu": BENCH_CPU, "thread_env": ONE_CORE_ENV, "cases": rows,
        "worst_vector_over_bare": worst, "goal_vector_over_bare": GOAL_RATIO,
        "load_average_end": list(os.getloadavg()),
        "command": " ".join([sys.executable, "-m", "dvla_hpc.bench", "libero_steps",
                             *(sys.argv[1:] if argv is None else argv)]),
    })
    return 0 if worst >= GOAL_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
