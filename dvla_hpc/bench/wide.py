"""Benchmark: one job of many ranks on this machine (64 by default, on 2 cores): start-up time,
memory per role (PSS: shared libraries counted once), CPU share per role (what a waiting rank
costs), and the learner root's control traffic.

    python -m dvla_hpc.bench wide [--ranks 64] [--config configs/wide.yaml] [--out bench_out/wide]

Prints a table per role and writes JSON."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import psutil

from dvla_hpc.bench.runs import BENCH_ENV, mpiexec, rank_processes, write_results
from dvla_hpc.config.loader import ConfigError, load_config
from dvla_hpc.runtime.topology import LayoutError, plan_layout

MIB = 2**20


def pss_mib(process: psutil.Process) -> float:
    """Proportional set size of a rank and its env workers: shared pages split among sharers."""
    total = 0
    for proc in [process, *process.children(recursive=True)]:
        try:
            total += proc.memory_full_info().pss
        except psutil.Error:
            pass
    return total / MIB


def cpu_seconds(process: psutil.Process) -> float:
    total = 0.0
    for proc in [process, *process.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def roles_of(ranks: int, cfg) -> tuple[str, ...]:
    layout = cfg.layout
    node_of = [r // layout.ranks_per_node if layout.ranks_per_node else 0 for r in range(ranks)]
    switch_of = [n // layout.nodes_per_switch if layout.nodes_per_switch else 0 for n in node_of]
    return plan_layout(ranks, layout.learn_ranks, layout.infer_ranks, node_of, switch_of).roles


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=64)
    parser.add_argument("--config", default="configs/wide.yaml")
    parser.add_argument("--out", default="bench_out/wide")
    parser.add_argument("--timeout", type=float, default=1500.0)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run_dir = out / f"run{args.ranks}"
    subprocess.run(["rm", "-rf", str(run_dir)], check=True)
    try:
        roles = roles_of(args.ranks, load_config(args.config, args.overrides))
    except (ConfigError, LayoutError) as err:
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
        return 2
    cmd = [mpiexec(), "-n", str(args.ranks), sys.executable, "-m", "dvla_hpc.main", "--config", args.config,
           "--out", str(run_dir), "run.progress_bar=false", *args.overrides]
    print(" ".join(cmd), flush=True)
    log = open(out / f"run{args.ranks}.log", "w")
    began = time.monotonic()
    job = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **BENCH_ENV})
    started_s = None
    pss: dict[int, list[float]] = defaultdict(list)
    cpu_at_start: dict[int, float] = {}
    cpu_last: dict[int, float] = {}
    while job.poll() is None:
        if time.monotonic() - began > args.timeout:
            job.kill()
            raise SystemExit(f"the job outlived {args.timeout:.0f} s; see {log.name}")
        if started_s is None and (run_dir / "metrics.jsonl").exists():
            started_s = time.monotonic() - began  # the root's lanes run: every rank is past set-up
        if started_s is not None:
            for rank, proc in rank_processes(job.pid).items():
                pss[rank].append(pss_mib(proc))
                seconds = cpu_seconds(proc)
                cpu_at_start.setdefault(rank, seconds)
                cpu_last[rank] = seconds
        time.sleep(3.0)
    wall = time.monotonic() - began
    log.close()
    if job.returncode != 0:
        raise SystemExit(f"the job failed with exit code {job.returncode}; see {log.name}")
    summary = json.loads((run_dir / "summary.json").read_text())
    running_s = wall - (started_s or 0.0)
    by_role: dict[str, dict] = {}
    for role in ("sim", "infer", "learn"):
        ranks = [r for r in range(args.ranks) if roles[r] == role and pss.get(r)]
        if not ranks:
            continue
        shares = [(cpu_last[r] - cpu_at_start[r]) / running_s for r in ranks]
        by_role[role] = {"ranks": len(ranks),
                         "pss_mib_mean": round(statistics.mean(max(pss[r]) for r in ranks), 1),
                         "pss_mib_max": round(max(max(pss[r]) for r in ranks), 1),
                         "cpu_share_mean": round(statistics.mean(shares), 4),
                         "cpu_share_min": round(min(shares), 4)}
    results = {"ranks": args.ranks, "command": " ".join(cmd), "startup_s": round(started_s or -1, 1),
               "wall_s": round(wall, 1), "env_steps": summary["env_steps"],
               "env_steps_per_second": summary["env_steps_per_second"],
               "success_rate_first": summary["success_rate_first"],
               "success_rate_last": summary["success_rate_last"],
               "heartbeats": summary["heartbeats"], "roles": by_role}
    print(f"\n{args.ranks} ranks: started in {results['startup_s']} s, {summary['env_steps']} env steps "
          f"at {summary['env_steps_per_second']:.1f}/s; root control messages in "
          f"{summary['heartbeats']['root_control_received_per_s']}/s, out "
          f"{summary['heartbeats']['root_control_sent_per_s']}/s")
    print(f"{'role':<7}{'ranks':>6}{'PSS MiB mean':>14}{'PSS max':>9}{'CPU share mean':>16}{'min':>8}")
    for role, r in by_role.items():
        print(f"{role:<7}{r['ranks']:>6}{r['pss_mib_mean']:>14.1f}{r['pss_mib_max']:>9.1f}"
              f"{r['cpu_share_mean']:>16.3f}{r['cpu_share_min']:>8.3f}")
    write_results(out / f"results{args.ranks}.json", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
