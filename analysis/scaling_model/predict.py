"""Predict throughput (sync, async) and weight-distribution time on GPU fat trees.

    python -m analysis.scaling_model.predict [--out analysis/scaling_model/results] [--ranks 512 4096]
        [--params 1e9 7e9 1e12] [--links 100 200 400] [--base-ranks 8]

Prints a table and writes predictions.json, table.md and PNG plots. Async runs use lanes/flow_credit.py's
flow budget (see `scenario.flow_budget`); the former budget, with a spare group per sampler for
each extra learner, is reported beside it as the lag it led to. Assumptions: gpu.py."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dvla_hpc.config.schema import LayoutConfig

from .broadcast import broadcast_s, with_fanout
from .gpu import GpuCluster, gpu_scenario
from .machine import CALIBRATION, load_calibration
from .scenario import flow_budget
from .simulate import run_all, simulate

RESULTS = Path(__file__).with_name("results")
FANOUT_AS_CODED, FANOUT_FORMER = LayoutConfig.tree_fanout, 16  # layout.tree_fanout; its default until 2026-11


def former_lag(sc, ahead: int) -> float:
    """Versions a group waits when the former flow budget is full: budget / groups per update - 1."""
    w, p = sc.workload, sc.placement
    budget = flow_budget(w.groups_per_update, ahead, len(p.learners), len(p.sims), former=True)
    return budget / w.groups_per_update - 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--calibration", type=Path, default=CALIBRATION)
    parser.add_argument("--ranks", type=int, nargs="+", default=[512, 4096])
    parser.add_argument("--params", type=float, nargs="+", default=[1e9, 7e9, 1e12])
    parser.add_argument("--links", type=float, nargs="+", default=[100, 200, 400], help="Gb/s")
    parser.add_argument("--base-ranks", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    cal, cluster = load_calibration(args.calibration), GpuCluster()
    cases = [(n, p, link) for n in sorted({args.base_ranks, *args.ranks}, reverse=True)
             for p in args.params for link in args.links]
    jobs = []
    for n, p, link in cases:  # four jobs per case, in this order
        for mode in ("async", "sync"):
            jobs.append((simulate, gpu_scenario(cal, n, p, link, mode, cluster)))
        sc = gpu_scenario(cal, n, p, link, "async", cluster)
        jobs += [(broadcast_s, with_fanout(sc, cluster.ranks_per_node, fanout))
                 for fanout in (FANOUT_AS_CODED, FANOUT_FORMER)]
    results = run_all(jobs, args.workers)
    rows = {}
    for i, (n, p, link) in enumerate(cases):
        run_async, run_sync, tree, tree_former = results[4 * i: 4 * i + 4]
        sc = jobs[4 * i][1]
        w, learners = sc.workload, len(sc.placement.learners)
        rows[(n, p, link)] = {
            "ranks": n, "params": p, "link_gbps": link, "learners": learners,
            "infers": len(sc.placement.infers), "sims": len(sc.placement.sims),
            "async_steps_per_s": run_async.steady_steps_per_s,
            "sync_steps_per_s": run_sync.steady_steps_per_s,
            "broadcast_s": tree, "broadcast_s_former_fanout": tree_former, "allreduce_s": run_async.allreduce_s,
            "update_s": sc.lanes.learn * w.groups_per_update * w.group_size * w.max_episode_steps / learners,
            "async_mean_lag": run_async.mean_lag, "async_bottleneck": run_async.bottleneck,
            "former_flow_lag": former_lag(sc, cal["workload"]["flow_versions_ahead"]),
            "async": run_async.as_dict(), "sync": run_sync.as_dict()}
    for (n, p, link), row in rows.items():
        base = rows[(args.base_ranks, p, link)]
        scale = n / args.base_ranks
        row["async_weak_scaling"] = row["async_steps_per_s"] / (scale * base["async_steps_per_s"])
        row["sync_weak_scaling"] = row["sync_steps_per_s"] / (scale * base["sync_steps_per_s"])
    table = format_table([r for r in rows.values() if r["ranks"] != args.base_ranks], args.base_ranks)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(table + "\n")
    record = {"command": "python -m analysis.scaling_model.predict " + " ".join(argv or sys.argv[1:]),
              "calibration": cal, "cluster": cluster.__dict__, "base_ranks": args.base_ranks,
              "rows": list(rows.values())}
    (args.out / "predictions.json").write_text(json.dumps(record, indent=1) + "\n")
    from .plots import plot_all
    for path in plot_all(list(rows.values()), args.base_ranks, args.out):
        print(f"wrote {path}")
    return 0


COLUMNS = [  # (heading, row key, format)
    ("ranks", "ranks", "{}"), ("params", "params", "{:.0e}"), ("link Gb/s", "link_gbps", "{:.0f}"),
    ("async steps/s", "async_steps_per_s", "{:,.1f}"), ("sync steps/s", "sync_steps_per_s", "{:,.1f}"),
    ("async weak scaling", "async_weak_scaling", "{:.1%}"),
    ("sync weak scaling", "sync_weak_scaling", "{:.1%}"),
    ("update s", "update_s", "{:,.1f}"), ("allreduce s", "allreduce_s", "{:,.2f}"),
    (f"broadcast s (fan-out {FANOUT_AS_CODED})", "broadcast_s", "{:,.2f}"),
    (f"broadcast s (fan-out {FANOUT_FORMER}, former)", "broadcast_s_former_fanout", "{:,.2f}"),
    ("async lag", "async_mean_lag", "{:.1f}"), ("lag, former flow budget", "former_flow_lag", "{:.0f}"),
]


def format_table(rows: list[dict], base: int) -> str:
    """Markdown; weak scaling is against `base` ranks at the same size and link."""
    lines = ["| " + " | ".join(heading for heading, _, _ in COLUMNS) + " |",
             "|" + "---:|" * len(COLUMNS)]
    for r in sorted(rows, key=lambda r: (r["ranks"], r["params"], r["link_gbps"])):
        lines.append("| " + " | ".join(fmt.format(r[key]) for _, key, fmt in COLUMNS) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
