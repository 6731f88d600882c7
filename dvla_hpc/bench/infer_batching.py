"""Benchmark: one infer rank serving many sim ranks, one slab a policy call against merged calls.

    python -m dvla_hpc.bench infer_batching [--ranks 24] [--rounds 2] [key=value ...]

Runs the same mpiexec job with pipeline.infer_max_batch=1 (every slab its own policy call, since
a half-batch always fits) and at the config's value (queued slabs merged), the two taking turns
to go first in each round. Reports steady env steps/s, envs per policy call and how busy the
infer lane was."""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from dvla_hpc.bench.runs import mpiexec, run_main, write_results
from dvla_hpc.bench.throughput import steady_rates
from dvla_hpc.config.loader import load_config
from dvla_hpc.runtime.blueprint import Blueprint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/wide.yaml")
    parser.add_argument("--ranks", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=150.0, help="wall-clock limit of each run")
    parser.add_argument("--out", default="bench_out/infer_batching")
    parser.add_argument("overrides", nargs="*", default=["layout.infer_ranks=1"])
    args = parser.parse_args(argv)
    bp = Blueprint.from_config(load_config(args.config, args.overrides))
    half = bp.cfg.env.envs_per_sampler // 2
    variants = {"one_slab": 1, "merged": bp.infer_batch}  # a half-batch always fits: 1 is one slab a call
    if bp.infer_batch < 2 * half:
        raise SystemExit(f"pipeline.infer_max_batch={bp.cfg.pipeline.infer_max_batch} holds no two slabs "
                         f"of {half} envs: nothing to merge")
    out = Path(args.out)
    results: dict = {"config": args.config, "overrides": args.overrides, "ranks": args.ranks,
                     "infer_max_batch": variants, "rounds": []}
    for k in range(args.rounds):
        order = list(variants) if k % 2 == 0 else list(reversed(variants))
        runs = {}
        for name in order:
            run_dir = out / f"round_{k}" / name
            summary = run_main(f"round {k} {name}", [mpiexec(), "-n", str(args.ranks)],
                               ["--config", args.config, *args.overrides, "run.total_env_steps=1000000000",
                                f"run.wall_clock_limit_s={args.seconds}",
                                f"pipeline.infer_max_batch={variants[name]}"], run_dir, args.seconds + 300)
            runs[name] = {**steady_rates(run_dir / "metrics.jsonl", 0.2),
                          "envs_per_policy_call": summary["envs_per_policy_call"],
                          "infer_busy": summary["lanes"]["infer"]["busy"]}
        runs["merged_over_one_slab"] = runs["merged"]["env_steps_per_s"] / runs["one_slab"]["env_steps_per_s"]
        results["rounds"].append({"first": order[0], **runs})
    results["median_merged_over_one_slab"] = statistics.median(
        r["merged_over_one_slab"] for r in results["rounds"])

    print(f"\n{'round':<7}{'variant':<10}{'env steps/s':>12}{'envs/call':>11}{'infer busy':>12}")
    for k, r in enumerate(results["rounds"]):
        for name in variants:
            v = r[name]
            print(f"{k:<7}{name:<10}{v['env_steps_per_s']:>12.1f}{v['envs_per_policy_call']:>11.2f}"
                  f"{v['infer_busy']:>12.2f}")
    ratios = ", ".join(f"{r['merged_over_one_slab']:.2f}" for r in results["rounds"])
    print(f"merged / one slab a call: median {results['median_merged_over_one_slab']:.2f} ({ratios})")
    write_results(out / "infer_batching.json", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
