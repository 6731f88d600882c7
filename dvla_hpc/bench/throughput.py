"""Benchmark: each lane's cost alone, then sync and async runs of one config, against the model.

    python -m dvla_hpc.bench throughput --config configs/throughput.yaml [--ranks 4] [key=value ...]

Steady-state rates come from the runs' metrics.jsonl (update records after the warm-up share of
the run), so process start-up and env spawning do not count against either mode."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from dvla_hpc.bench.lane_costs import measure, model_bounds
from dvla_hpc.bench.runs import mpiexec, run_main, write_results
from dvla_hpc.config.loader import load_config


def steady_rates(metrics_path: Path, warmup_share: float) -> dict:
    updates = [r for r in map(json.loads, metrics_path.read_text().splitlines()) if r.get("kind") == "update"]
    if len(updates) < 3:
        raise SystemExit(f"{metrics_path}: only {len(updates)} updates; run longer (run.total_env_steps)")
    t_end = updates[-1]["t"]
    first = next(r for r in updates if r["t"] >= warmup_share * t_end)
    if first is updates[-1]:
        first = updates[-2]
    window = [r for r in updates if r["t"] > first["t"]]
    dt = t_end - first["t"]
    return {"env_steps_per_s": (updates[-1]["env_steps"] - first["env_steps"]) / dt,
            "trained_samples_per_s": sum(r["samples"] for r in window) / dt,
            "window_s": dt, "updates_in_window": len(window),
            "lag_mean": sum(r["lag_mean"] * r["samples"] for r in window) / max(1, sum(r["samples"] for r in window))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/throughput.yaml")
    parser.add_argument("--out", default="bench_out/throughput")
    parser.add_argument("--probe-seconds", type=float, default=10.0, help="time each lane alone")
    parser.add_argument("--ranks", type=int, default=0, help="also run both modes under mpiexec -n RANKS")
    parser.add_argument("--warmup-share", type=float, default=0.2)
    parser.add_argument("--timeout", type=float, default=1200.0)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(args.config, args.overrides)
    cores = len(os.sched_getaffinity(0))

    print(f"lane costs alone ({args.probe_seconds:.0f} s each) ...", flush=True)
    model = model_bounds(measure(cfg, args.probe_seconds), cores)
    results: dict = {"config": args.config, "overrides": args.overrides, "cores": cores, "model": model,
                     "runs": {}}
    for name, c in model["costs"].items():
        print(f"  {name:<7} {1e3 * c['wall_per_step']:7.3f} ms/step wall  {1e3 * c['cpu_per_step']:7.3f} "
              f"ms/step CPU  ({c['cores_used']:.2f} cores)")

    variants = [("local", [])]
    if args.ranks:
        variants.append((f"mpi{args.ranks}", [mpiexec(), "-n", str(args.ranks)]))
    for label, prefix in variants:
        for mode in ("sync", "async"):
            run_dir = out / f"{label}-{mode}"
            summary = run_main(f"{label}-{mode}", prefix, ["--config", args.config, *args.overrides,
                                                            f"run.mode={mode}"], run_dir, args.timeout)
            rates = steady_rates(run_dir / "metrics.jsonl", args.warmup_share)
            results["runs"][f"{label}-{mode}"] = {**rates, "lanes": summary["lanes"],
                                                  "wall_seconds": summary["wall_seconds"]}

    print(f"\n{'run':<14}{'env steps/s':>12}{'trained/s':>11}{'model':>9}{'of model':>10}{'lag':>6}")
    for name, r in results["runs"].items():
        bound = model["sync_steps_per_s"] if name.endswith("-sync") else model["async_steps_per_s"]
        r["model_steps_per_s"] = bound
        r["fraction_of_model"] = r["env_steps_per_s"] / bound
        print(f"{name:<14}{r['env_steps_per_s']:>12.1f}{r['trained_samples_per_s']:>11.1f}{bound:>9.1f}"
              f"{r['fraction_of_model']:>10.2f}{r['lag_mean']:>6.2f}")
    for label, _ in variants:
        runs = results["runs"]
        ratio = runs[f"{label}-async"]["env_steps_per_s"] / runs[f"{label}-sync"]["env_steps_per_s"]
        results[f"{label}_async_over_sync"] = ratio
        busiest = max(runs[f"{label}-async"]["lanes"].items(), key=lambda kv: kv[1].get("busy", 0))
        print(f"{label}: async / sync = {ratio:.2f} (model {model['async_steps_per_s'] / model['sync_steps_per_s']:.2f}); "
              f"busiest async lane: {busiest[0]} ({busiest[1]['busy']:.2f} busy)")
    print(f"async bound limited by: {model['async_limited_by']}")
    print("\nwhere each lane's time went (share of its run: compute / copy / wait / poll)")
    for name, r in results["runs"].items():
        parts = "  ".join(f"{lane} " + "/".join(f"{share:.2f}" for share in v["breakdown"].values())
                          for lane, v in r["lanes"].items())
        print(f"{name:<14}{parts}")
    write_results(out / "throughput.json", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
