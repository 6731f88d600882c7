"""What sharing one process (one GIL) costs the infer lane and the learner.

    python -m dvla_hpc.bench gil_contention [--config configs/throughput.yaml] [--seconds 8] [key=value ...]

Single-process mode runs every lane as a thread of one process. The infer lane's `serve` is timed
three ways: alone, while a learner thread runs `GRPOLearner.update` in this process, and while a
learner runs in a process of its own, as it does under MPI. Both concurrent runs load the cores
alike, so the thread-against-process difference is what the shared GIL costs; alone-against-process
is what the shared cores and caches cost."""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

from dvla_hpc.bench.lane_costs import LaneCost, infer_cost, learn_cost
from dvla_hpc.bench.runs import write_results
from dvla_hpc.config.loader import load_config
from dvla_hpc.config.schema import Config
from dvla_hpc.runtime.blueprint import Blueprint

CPU = torch.device("cpu")
WARM_LEARNER_TIMEOUT_S = 300


def learner_in_process(config: str, overrides: list[str], seconds: float, ready, results) -> None:
    torch.set_num_threads(1)
    cfg = load_config(config, overrides)
    cost = learn_cost(cfg, Blueprint.from_config(cfg), seconds, CPU, ready=ready.set)
    results.put((cost.wall_per_step, cost.cpu_per_step, cost.steps))


def wait_until_warm(ready, alive: Callable[[], bool], what: str) -> None:
    """Until the learner says it is warm; an error at once if it ended first, or after the timeout."""
    deadline = time.monotonic() + WARM_LEARNER_TIMEOUT_S
    while not ready.wait(0.2):
        if not alive():
            raise RuntimeError(f"the learner {what} ended before it was warm (see its traceback above)")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the learner {what} was not warm within {WARM_LEARNER_TIMEOUT_S} s")


def beside_thread(cfg: Config, bp: Blueprint, seconds: float) -> tuple[LaneCost, LaneCost]:
    ready, found = threading.Event(), []

    def train() -> None:
        found.append(learn_cost(cfg, bp, seconds + 1, CPU, ready=ready.set))

    learner = threading.Thread(target=train, name="learner", daemon=True)
    learner.start()
    wait_until_warm(ready, learner.is_alive, "thread")
    infer = infer_cost(cfg, bp, seconds, CPU)
    learner.join()
    return infer, found[0]


def beside_process(cfg: Config, bp: Blueprint, seconds: float, config: str,
                   overrides: list[str]) -> tuple[LaneCost, LaneCost]:
    ctx = mp.get_context("spawn")
    ready, results = ctx.Event(), ctx.Queue()
    learner = ctx.Process(target=learner_in_process, args=(config, overrides, seconds + 1, ready, results),
                          name="learner", daemon=True)
    learner.start()
    try:
        wait_until_warm(ready, learner.is_alive, "process")
    except RuntimeError:
        learner.kill()
        raise
    infer = infer_cost(cfg, bp, seconds, CPU)
    found = LaneCost(*results.get(timeout=WARM_LEARNER_TIMEOUT_S))
    learner.join()
    return infer, found


def measure(config: str, overrides: list[str], seconds: float) -> dict:
    torch.set_num_threads(1)
    cfg = load_config(config, overrides)
    bp = Blueprint.from_config(cfg)
    runs = {"alone": (infer_cost(cfg, bp, seconds, CPU), learn_cost(cfg, bp, seconds, CPU)),
            "learner thread": beside_thread(cfg, bp, seconds),
            "learner process": beside_process(cfg, bp, seconds, config, overrides)}
    alone, thread, process = (runs[name][0].wall_per_step
                              for name in ("alone", "learner thread", "learner process"))
    return {"runs": {name: {"infer_ms_per_step": 1e3 * infer.wall_per_step,
                            "learn_ms_per_step": 1e3 * learn.wall_per_step,
                            "infer_steps": infer.steps, "learn_steps": learn.steps}
                     for name, (infer, learn) in runs.items()},
            "infer_cost_of_shared_gil": thread / process - 1,
            "infer_cost_of_shared_cores": process / alone - 1}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/throughput.yaml")
    parser.add_argument("--out", default="bench_out/gil_contention")
    parser.add_argument("--seconds", type=float, default=8.0, help="infer lane timing window of each run")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    found = measure(args.config, args.overrides, args.seconds)
    print(f"{'infer lane':<16} {'infer ms/step':>14} {'learn ms/step':>14}")
    for name, run in found["runs"].items():
        print(f"{name:<16} {run['infer_ms_per_step']:14.3f} {run['learn_ms_per_step']:14.3f}")
    print(f"shared GIL: infer {found['infer_cost_of_shared_gil']:+.1%} (thread against process); "
          f"shared cores: {found['infer_cost_of_shared_cores']:+.1%} (process against alone)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = ["python", "-m", "dvla_hpc.bench", "gil_contention", *(argv or [])]
    write_results(out / "gil_contention.json", {"command": command, "config": args.config,
                                                "overrides": args.overrides,
                                                "cores": len(os.sched_getaffinity(0)), **found})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
