"""The memory plan against what a learner really uses: build the learner of a preset on the
configured device, train a few updates on synthetic full-length groups, and compare the peak
allocation with the plan's learn-rank figure.

    python -m dvla_hpc.bench memory_fit [--out DIR] [key=value ...]   (e.g. model.preset=1b run.device=cuda)

On a GPU the peak is torch's `max_memory_allocated`; on the CPU it is the growth of the process's
peak RSS (VmHWM), a coarser figure."""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from dvla_hpc.bench.runs import write_results
from dvla_hpc.config.loader import load_config
from dvla_hpc.memory.accounting import DATA_PATH
from dvla_hpc.memory.layouts import H, SlabKind, stamp
from dvla_hpc.memory.slab_pool import SlabPool
from dvla_hpc.runtime import assembly
from dvla_hpc.runtime.blueprint import Blueprint
from dvla_hpc.runtime.devices import local_device
from dvla_hpc.runtime.memory_check import rank_plan

MIB = 2**20


def synthetic_groups(bp: Blueprint, version: int) -> tuple[SlabPool, list]:
    learn, t = bp.cfg.learn, bp.spec.max_episode_steps
    pool = SlabPool(bp.episode_layout, learn.groups_per_update * learn.group_size)
    rng = np.random.default_rng(0)
    for view in pool.slots:
        stamp(view["header"], SlabKind.EPISODE)
        view["header"][H.COUNT] = view["header"][H.ENV_STEPS] = t
        view["image"][:] = rng.integers(0, 255, view["image"].shape, dtype=np.uint8)
        view["tokens"][:] = rng.integers(0, bp.cfg.model.action_bins, view["tokens"].shape)
        view["logp"][:] = -np.log(bp.cfg.model.action_bins)
        view["reward"][:] = rng.uniform(0, 1, t)
        view["version"][:] = version
    g = learn.group_size
    return pool, [pool.slots[i * g:(i + 1) * g] for i in range(learn.groups_per_update)]


def peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork and exec, so a child of a large
    # process (pytest, by the time it runs this) starts from its parent's size and shows no growth.
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None)
    parser.add_argument("--out", default="bench_out/memory_fit")
    parser.add_argument("--updates", type=int, default=2)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    bp = Blueprint.from_config(cfg)
    device = local_device(cfg.run.device)
    DATA_PATH.configure(pin=device.type == "cuda")
    plan = rank_plan(bp, "learn", device, samplers=1)
    print(plan.format(), flush=True)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.cuda.reset_peak_memory_stats(device)
    base = peak_bytes(device) if device.type == "cpu" else 0
    t0 = time.perf_counter()
    learner = assembly.build_learner(bp, device)
    _, groups = synthetic_groups(bp, 0)
    for _ in range(args.updates):
        for group in groups:
            for view in group:
                view["version"][:] = learner.version
        learner.update(groups)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    measured = peak_bytes(device) - base
    predicted = plan.device_bytes if device.type == "cuda" else plan.device_bytes + plan.host_bytes
    results = {"device": str(device), "preset": cfg.model.preset, "parameters": plan.parameters,
               "predicted_bytes": predicted, "measured_peak_bytes": measured,
               "measured_over_predicted": round(measured / predicted, 3), "rows": plan.rows,
               "seconds": round(time.perf_counter() - t0, 1), "updates": args.updates,
               "peak_source": ("torch.cuda.max_memory_allocated" if device.type == "cuda"
                               else "peak RSS (VmHWM) growth")}
    print(f"{cfg.model.preset} on {device}: plan {predicted / MIB:,.0f} MiB, measured peak "
          f"{measured / MIB:,.0f} MiB ({results['measured_over_predicted']:.2f} of the plan)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_results(out / "memory_fit.json", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
