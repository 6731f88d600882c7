"""Benchmark: env steps to a success threshold, sync vs async, and a long async run's memory.

    python -m dvla_hpc.bench efficiency [--threshold 0.8] [--async-seconds 600] [--seeds 1] [key=value ...]

Both modes train the quickstart config from the same seeds (run.seed = 0 .. seeds-1). Sync stops
at the threshold (run.stop_at_success). The first seed's async run goes on for --async-seconds,
so the same run also gives data-path allocations after warm-up and RSS growth; later seeds' async
runs stop at the threshold too. The threshold is crossed when the last 100 episodes' success rate
first reaches it. One seed's ratio swings by 0.3 between runs on a 2-core VM; the ratio of the
seeds' mean steps is the figure to compare."""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from dvla_hpc.bench.runs import run_main, write_results

WINDOW = 100
MODES = ("sync", "async")


def steps_to_threshold(metrics_path: Path, threshold: float) -> int | None:
    for record in map(json.loads, metrics_path.read_text().splitlines()):
        if record.get("kind") in ("update", "end") and record["episodes"] >= WINDOW \
                and record["success_recent"] >= threshold:
            return int(record["env_steps"])
    return None


def seed_runs(config: str, overrides: list[str], threshold: float, seed: int, modes: list[str],
              async_seconds: float, sync_seconds: float) -> dict[str, list[str]]:
    """Arguments of each mode's run for one seed; only seed 0's async run ignores the threshold."""
    common = ["--config", config, *overrides, "output.record_every=0", "run.total_env_steps=100000000",
              f"run.seed={seed}"]
    stop = f"run.stop_at_success={threshold}"
    runs = {"sync": [*common, "run.mode=sync", stop, f"run.wall_clock_limit_s={sync_seconds}"],
            "async": [*common, "run.mode=async", f"run.wall_clock_limit_s={async_seconds}",
                      *([stop] if seed > 0 else [])]}
    return {mode: runs[mode] for mode in modes}


def compare(per_seed: list[dict]) -> dict:
    """Mean steps to the threshold per mode over the seeds where both modes reached it, and the
    async / sync ratio of those means (with each seed's own ratio)."""
    out: dict = {"seeds_compared": 0}
    first = per_seed[0] if per_seed else {}
    if all(m in first for m in MODES):  # seed 0's async run is the long one: its rate is steady
        out["async_rate_over_sync"] = first["async"]["env_steps_per_second"] / first["sync"]["env_steps_per_second"]
    both = [r for r in per_seed if all(r.get(m, {}).get("steps_to_threshold") for m in MODES)]
    if both:
        mean = {m: statistics.fmean(r[m]["steps_to_threshold"] for r in both) for m in MODES}
        out.update(seeds_compared=len(both), mean_steps_to_threshold=mean,
                   async_steps_over_sync=mean["async"] / mean["sync"],
                   per_seed_async_steps_over_sync=[r["async"]["steps_to_threshold"] / r["sync"]["steps_to_threshold"]
                                                   for r in both])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/quickstart.yaml")
    parser.add_argument("--out", default="bench_out/efficiency")
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--async-seconds", type=float, default=600.0)
    parser.add_argument("--sync-seconds", type=float, default=1200.0, help="sync gives up after this")
    parser.add_argument("--seeds", type=int, default=1, help="run both modes from run.seed 0 .. seeds-1")
    parser.add_argument("--modes", default="sync,async", help="comma-separated subset of sync,async")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    modes = [m for m in MODES if m in args.modes.split(",")]
    if args.seeds < 1 or not modes:
        parser.error("--seeds must be at least 1 and --modes must name sync and/or async")
    out = Path(args.out)
    results: dict = {"config": args.config, "threshold": args.threshold, "overrides": args.overrides,
                     "seeds": []}
    print(f"\n{'seed':<6}{'mode':<7}{'steps to ' + str(args.threshold):>16}{'env steps':>11}{'wall s':>8}"
          f"{'steps/s':>9}{'lag':>6}")
    for seed in range(args.seeds):
        per_mode: dict = {"seed": seed}
        runs = seed_runs(args.config, args.overrides, args.threshold, seed, modes, args.async_seconds,
                         args.sync_seconds)
        for mode, run_args in runs.items():
            limit = args.async_seconds if mode == "async" else args.sync_seconds
            run_dir = out / f"seed{seed}" / mode
            summary = run_main(f"seed {seed} {mode}", [], run_args, run_dir, limit + 300)
            r = per_mode[mode] = {
                "steps_to_threshold": steps_to_threshold(run_dir / "metrics.jsonl", args.threshold),
                "env_steps": summary["env_steps"], "wall_seconds": summary["wall_seconds"],
                "env_steps_per_second": summary["env_steps_per_second"],
                "policy_lag_mean": summary["policy_lag_mean"], "lanes": summary["lanes"],
                "memory": summary["memory"]}
            shown = r["steps_to_threshold"] if r["steps_to_threshold"] is not None else "not reached"
            print(f"{seed:<6}{mode:<7}{shown:>16}{r['env_steps']:>11}{r['wall_seconds']:>8.0f}"
                  f"{r['env_steps_per_second']:>9.1f}{r['policy_lag_mean']:>6.2f}", flush=True)
        results["seeds"].append(per_mode)

    results["comparison"] = comparison = compare(results["seeds"])
    if "async_rate_over_sync" in comparison:
        print(f"seed 0: async runs {comparison['async_rate_over_sync']:.2f}x sync's env steps/s")
    if comparison["seeds_compared"]:
        per_seed = ", ".join(f"{x:.2f}" for x in comparison["per_seed_async_steps_over_sync"])
        print(f"over {comparison['seeds_compared']} seed(s): async needs "
              f"{comparison['async_steps_over_sync']:.2f}x the env steps sync needs (each seed: {per_seed})")
    memory = results["seeds"][0].get("async", {}).get("memory")
    if memory:
        print(f"seed 0 async run: {memory['allocations_after_warmup']} data-path allocations after warm-up, RSS "
              f"{memory.get('rss_mib_at_warmup')} -> {memory['rss_mib_end']} MiB "
              f"(growth {100 * memory.get('rss_growth_after_warmup', float('nan')):.2f}%)")
    write_results(out / "efficiency.json", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
