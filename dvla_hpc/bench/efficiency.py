"""Benchmark: env steps to a success threshold, sync vs async, and a long async run's memory.

    python -m dvla_hpc.bench efficiency [--threshold 0.8] [--async-seconds 600] [key=value ...]

Both runs train the quickstart config. Sync stops at the threshold (run.stop_at_success); async
runs for --async-seconds so the same run also gives data-path allocations after warm-up and RSS
growth. The threshold is crossed when the last 100 episodes' success rate first reaches it."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dvla_hpc.bench.runs import run_main, write_results

WINDOW = 100


def steps_to_threshold(metrics_path: Path, threshold: float) -> int | None:
    for record in map(json.loads, metrics_path.read_text().splitlines()):
        if record.get("kind") in ("update", "end") and record["episodes"] >= WINDOW \
                and record["success_recent"] >= threshold:
            return int(record["env_steps"])
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/quickstart.yaml")
    parser.add_argument("--out", default="bench_out/efficiency")
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--async-seconds", type=float, default=600.0)
    parser.add_argument("--sync-seconds", type=float, default=1200.0, help="sync gives up after this")
    parser.add_argument("--modes", default="sync,async", help="comma-separated subset of sync,async")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    out = Path(args.out)
    common = ["--config", args.config, *args.overrides, "output.record_every=0", "run.total_env_steps=100000000"]
    limits = {"sync": args.sync_seconds, "async": args.async_seconds}
    runs = {
        "sync": [*common, "run.mode=sync", f"run.stop_at_success={args.threshold}"],
        "async": [*common, "run.mode=async"],
    }
    runs = {mode: run_args for mode, run_args in runs.items() if mode in args.modes.split(",")}
    results: dict = {"config": args.config, "threshold": args.threshold, "overrides": args.overrides}
    for mode, run_args in runs.items():
        summary = run_main(mode, [], [*run_args, f"run.wall_clock_limit_s={limits[mode]}"], out / mode,
                           limits[mode] + 300)
        results[mode] = {"steps_to_threshold": steps_to_threshold(out / mode / "metrics.jsonl", args.threshold),
                         "env_steps": summary["env_steps"], "wall_seconds": summary["wall_seconds"],
                         "env_steps_per_second": summary["env_steps_per_second"],
                         "policy_lag_mean": summary["policy_lag_mean"], "lanes": summary["lanes"],
                         "memory": summary["memory"]}

    sync_steps = results.get("sync", {}).get("steps_to_threshold")
    async_steps = results.get("async", {}).get("steps_to_threshold")
    print(f"\n{'mode':<7}{'steps to ' + str(args.threshold):>16}{'env steps':>11}{'wall s':>8}{'steps/s':>9}{'lag':>6}")
    for mode in runs:
        r = results[mode]
        shown = r["steps_to_threshold"] if r["steps_to_threshold"] is not None else "not reached"
        print(f"{mode:<7}{shown:>16}{r['env_steps']:>11}{r['wall_seconds']:>8.0f}"
              f"{r['env_steps_per_second']:>9.1f}{r['policy_lag_mean']:>6.2f}")
    if sync_steps and async_steps:
        results["async_steps_over_sync"] = async_steps / sync_steps
        print(f"async needs {async_steps / sync_steps:.2f}x the env steps sync needs")
    memory = results.get("async", {}).get("memory")
    if memory:
        print(f"async run: {memory['allocations_after_warmup']} data-path allocations after warm-up, RSS "
              f"{memory.get('rss_mib_at_warmup')} -> {memory['rss_mib_end']} MiB "
              f"(growth {100 * memory.get('rss_growth_after_warmup', float('nan')):.2f}%)")
    write_results(out / "efficiency.json", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
