"""`python -m dvla_hpc.bench <name> [options]`: the project's benchmarks, each printing a table and
writing JSON under bench_out/ (see BENCHMARKS.md for the figures and the commands behind them)."""
from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "quickstart": "the quickstart job in one process and under mpiexec, with learning figures",
    "throughput": "lane costs alone, sync vs async runs of one config, and the performance model",
    "reacher": "Reacher-v5 from pixels: raw env limit, Sample Factory APPO and dvla_hpc side by side",
    "efficiency": "env steps sync and async need to reach a success threshold; RSS and allocations",
    "memory_fit": "a preset learner's peak memory on its device against the memory plan",
    "tree_bandwidth": "the weight tree over torch.distributed (NCCL/gloo): GB/s and byte identity",
    "gpu_check": "the prepared GPU check (make gpu-check): GPU tests, quickstart, throughput, tree, memory",
    "wide": "one job of many ranks (64) here: start-up, memory and CPU share per role, root control traffic",
    "faults": "faults done to jobs: hung and killed ranks, whole-job kills with resume, env faults, bad input",
    "checkpoint_stall": "infer lanes' serving rate while checkpoints are written against otherwise",
    "worker_cost": "CPU per frame of env workers against the raw loop, llvmpipe threads on and off",
    "gil_contention": "the infer lane's cost alone, beside a learner thread and beside a learner process",
    "infer_batching": "an infer rank serving many sim ranks: a slab a policy call against merged calls",
    "libero_steps": "LIBERO steps/s on one core: bare OffScreenRenderEnv vs VectorEnv, fast_render on/off",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in BENCHMARKS:
        print("usage: python -m dvla_hpc.bench <benchmark> [options]\n", file=sys.stderr)
        for name, what in BENCHMARKS.items():
            print(f"  {name:<15} {what}", file=sys.stderr)
        return 2
    return importlib.import_module(f"dvla_hpc.bench.{argv[0]}").main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
