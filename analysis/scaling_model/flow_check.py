"""Flow control at scale: lanes/flow_credit.py's budget against the former one (a spare group per
sampler for each extra learner), over a long async run on the GPU fat tree.

    python -m analysis.scaling_model.flow_check [--ranks 512] [--params 1e9] [--link 100] [--updates 20]

Prints trained and stepped env steps/s, the share of samples dropped as stale and the mean lag, and
writes flow_check.json beside the predictions."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .gpu import GpuCluster, gpu_scenario
from .machine import CALIBRATION, load_calibration
from .predict import RESULTS
from .simulate import run_all, simulate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=512)
    parser.add_argument("--params", type=float, default=1e9)
    parser.add_argument("--link", type=float, default=100, help="Gb/s")
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--calibration", type=Path, default=CALIBRATION)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    cal, cluster = load_calibration(args.calibration), GpuCluster(update_rounds=args.updates)
    scenarios = {former: gpu_scenario(cal, args.ranks, args.params, args.link, "async", cluster, former)
                 for former in (True, False)}
    results = dict(zip(scenarios, run_all([(simulate, sc) for sc in scenarios.values()])))
    rows = []
    for former, res in results.items():
        rows.append({"flow_budget": "former" if former else "as coded",
                     "budget_groups": scenarios[former].workload.flow_budget_groups,
                     "groups_per_update": scenarios[former].workload.groups_per_update,
                     **res.as_dict()})
        print(f"{rows[-1]['flow_budget']:>9}: budget {rows[-1]['budget_groups']} groups "
              f"({rows[-1]['budget_groups'] / rows[-1]['groups_per_update']:.1f} updates), "
              f"trained {res.steady_steps_per_s:,.0f} steps/s, stepped {res.produced_steps_per_s:,.0f}/s, "
              f"dropped stale {res.dropped_fraction:.0%}, mean lag {res.mean_lag:.1f}, "
              f"{res.versions} versions ({res.versions_skipped} not broadcast)")
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python -m analysis.scaling_model.flow_check " + " ".join(argv or sys.argv[1:])
    (args.out / "flow_check.json").write_text(json.dumps({"command": command, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
