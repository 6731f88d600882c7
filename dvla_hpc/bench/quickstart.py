"""Benchmark: the quickstart in one process and under `mpiexec -n 4`, with the learning figures.

    python -m dvla_hpc.bench.quickstart [--out bench_out/quickstart] [--ranks 4] [key=value ...]

Prints env steps, wall time, throughput and success before/after for each run and writes JSON."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

FIELDS = ("env_steps", "wall_seconds", "env_steps_per_second", "episodes",
          "success_rate_first", "success_rate_last", "policy_lag_mean", "samples_dropped_stale")


def mpiexec() -> str:
    local = Path(sys.executable).with_name("mpiexec")
    return str(local) if local.exists() else "mpiexec"


def run_one(label: str, prefix: list[str], out: Path, overrides: list[str], timeout_s: float) -> dict:
    run_dir = out / label
    cmd = [*prefix, sys.executable, "-m", "dvla_hpc.main", "--out", str(run_dir),
           "run.progress_bar=false", *overrides]
    print(f"[{label}] {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, timeout=timeout_s, capture_output=True, text=True,
                          env={**os.environ, "MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1"})
    if proc.returncode != 0:
        raise SystemExit(f"[{label}] failed with exit code {proc.returncode}:\n{proc.stderr[-4000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    result = {k: summary[k] for k in FIELDS}
    result["lanes"] = summary["lanes"]
    result["command_seconds"] = round(time.perf_counter() - t0, 1)
    return result


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
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
