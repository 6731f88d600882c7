"""Benchmark: the quickstart in one process and under `mpiexec -n 4`, with the learning figures.

    python -m dvla_hpc.bench quickstart [--out bench_out/quickstart] [--ranks 4] [key=value ...]

Prints env steps, wall time, throughput and success before/after for each run and writes JSON."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dvla_hpc.bench.runs import mpiexec, run_main, write_results

FIELDS = ("env_steps", "wall_seconds", "env_steps_per_second", "episodes",
          "success_rate_first", "success_rate_last", "policy_lag_mean", "samples_dropped_stale")


def run_one(label: str, prefix: list[str], out: Path, overrides: list[str], timeout_s: float) -> dict:
    summary = run_main(label, prefix, overrides, out / label, timeout_s)
    return {**{k: summary[k] for k in FIELDS}, "lanes": summary["lanes"],
            "command_seconds": summary["command_seconds"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench_out/quickstart")
    parser.add_argument("--ranks", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--only", choices=["local", "mpi"])
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    if args.only != "mpi":
        results["local"] = run_one("local", [], out, args.overrides, args.timeout)
    if args.only != "local":
        results[f"mpi{args.ranks}"] = run_one(f"mpi{args.ranks}", [mpiexec(), "-n", str(args.ranks)],
                                              out, args.overrides, args.timeout)
    print(f"\n{'run':<8}{'env steps':>11}{'wall s':>9}{'steps/s':>9}{'success first':>15}"
          f"{'success last':>14}{'lag':>7}")
    for label, r in results.items():
        print(f"{label:<8}{r['env_steps']:>11}{r['wall_seconds']:>9.1f}{r['env_steps_per_second']:>9.1f}"
              f"{r['success_rate_first']:>15.2f}{r['success_rate_last']:>14.2f}{r['policy_lag_mean']:>7.2f}")
    write_results(out / "results.json", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
