"""The prepared GPU check (`make gpu-check OUT=DIR`): under 8 minutes on one H100/H200 with 16 cores.

    python -m dvla_hpc.bench gpu_check --out DIR [--seconds 100]

(a) the quickstart with run.device=cuda, in one process and under mpiexec -n 4, with success rates;
(b) the throughput benchmark, async against sync, at a preset where inference and learning are
    GPU-heavy; (c) the weight tree over NCCL for the 1b preset (4 ranks sharing the GPU), GB/s and
    byte identity; (d) the learner's device peak memory against the memory plan, 1b preset;
(e) the throughput config on the host's CPU cores alone (run.device=cpu), in one process and under
    mpiexec -n 4: the throughput targets on a host with a core for every process, which a 2-core
    VM cannot show;
and first the tests marked `gpu`. Each part runs alone, so one failure does not hide the others;
everything lands in DIR/gpu_check.json (and each part's own JSON beside it)."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from dvla_hpc.bench.runs import BENCH_ENV, mpiexec, write_results

CUDA = ["run.device=cuda"]
PARTS = ("gpu_tests", "quickstart_local", "quickstart_mpi4", "throughput", "tree_nccl", "memory_fit",
         "cpu_throughput")


def run_part(name: str, cmd: list[str], timeout_s: float, log_dir: Path) -> dict:
    print(f"[{name}] {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                              env={**os.environ, **BENCH_ENV})
        rc, out, err = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as exc:
        rc, out, err = "timeout", exc.stdout or "", exc.stderr or ""
        out, err = (s.decode() if isinstance(s, bytes) else s for s in (out, err))
    (log_dir / f"{name}.log").write_text(f"$ {' '.join(cmd)}\n{out}\n--- stderr ---\n{err}")
    print(f"[{name}] exit {rc} in {time.perf_counter() - t0:.0f} s\n{out[-1500:]}", flush=True)
    return {"command": " ".join(cmd), "exit": rc, "seconds": round(time.perf_counter() - t0, 1),
            "tail": (out + err)[-800:]}


def summary_of(run_dir: Path) -> dict:
    path = run_dir / "summary.json"
    if not path.exists():
        return {}
    s = json.loads(path.read_text())
    keys = ("env_steps", "wall_seconds", "env_steps_per_second", "success_rate_first", "success_rate_last",
            "updates", "policy_lag_mean", "devices", "gpu", "ranks", "lanes", "data_plane", "memory")
    return {k: s.get(k) for k in keys}


Part = tuple[list[str], float, Path | None, Path | None]


def part_commands(args: argparse.Namespace, out: Path) -> dict[str, Part]:
    """Each part of PARTS: (command, timeout in seconds, run directory with a summary, figures JSON)."""
    py, mpi = sys.executable, mpiexec()
    quick = [f"run.wall_clock_limit_s={args.seconds}", "run.progress_bar=false"]

    def quickstart(prefix: list[str], label: str) -> tuple[list[str], float, Path, None]:
        run_dir = out / "runs" / label
        return ([*prefix, py, "-m", "dvla_hpc.main", "--out", str(run_dir), *CUDA, *quick],
                args.seconds + 90, run_dir, None)

    return {
        "gpu_tests": ([py, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider"], 150, None, None),
        "quickstart_local": quickstart([], "quickstart_local"),
        "quickstart_mpi4": quickstart([mpi, "-n", "4"], "quickstart_mpi4"),
        "throughput": ([py, "-m", "dvla_hpc.bench", "throughput", "--out", str(out / "throughput"),
                        "--probe-seconds", "5", f"model.preset={args.preset}", "run.total_env_steps=12000",
                        "run.wall_clock_limit_s=45", *CUDA], 200, None, out / "throughput/throughput.json"),
        "tree_nccl": ([mpi, "-n", "4", py, "-m", "dvla_hpc.bench", "tree_bandwidth", "--out",
                       str(out / "tree"), f"model.preset={args.tree_preset}", *CUDA,
                       "layout.ranks_per_node=2"], 150, None, out / "tree/tree_bandwidth.json"),
        "memory_fit": ([py, "-m", "dvla_hpc.bench", "memory_fit", "--out", str(out / "memory"),
                        f"model.preset={args.tree_preset}", "learn.minibatch_size=64", *CUDA],
                       150, None, out / "memory/memory_fit.json"),
        "cpu_throughput": ([py, "-m", "dvla_hpc.bench", "throughput", "--config", "configs/throughput.yaml",
                            "--out", str(out / "cpu_throughput"), "--ranks", "4", "--probe-seconds", "4",
                            "run.total_env_steps=16000", "run.device=cpu"], 300, None,
                           out / "cpu_throughput/throughput.json"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--seconds", type=float, default=100.0, help="wall clock of each quickstart run")
    parser.add_argument("--preset", default="base", help="throughput preset (GPU-heavy infer and learn)")
    parser.add_argument("--tree-preset", default="1b")
    parser.add_argument("--only", default=",".join(PARTS),
                        help=f"comma-separated parts to run (default all: {','.join(PARTS)})")
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    if only - set(PARTS):
        parser.error(f"--only: unknown parts {sorted(only - set(PARTS))}; known: {', '.join(PARTS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S")}
    parts = part_commands(args, out)
    for name in (name for name in PARTS if name in only):
        cmd, timeout_s, run_dir, figures = parts[name]
        results[name] = run_part(name, cmd, timeout_s, out)
        if run_dir is not None:
            results[name]["summary"] = summary_of(run_dir)
        if figures is not None and figures.exists():
            results[name]["figures"] = json.loads(figures.read_text())
    write_results(out / "gpu_check.json", results)
    failed = [k for k, v in results.items() if isinstance(v, dict) and v.get("exit") not in (0, None)]
    print(f"gpu check done; parts that failed: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
