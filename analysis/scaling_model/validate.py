"""Simulate the real `bench wide` runs on this machine's model and compare env steps/s.

    python -m analysis.scaling_model.validate [--real bench_out/scaling_model/wide] [--out DIR]

Reads `results{N}.json` written by
    OMP_NUM_THREADS=1 flock /tmp/dvla-bench.lock python -m dvla_hpc.bench wide --ranks N \
        --out bench_out/scaling_model/wide [layout.infer_ranks=1]
and the layout and step budget from the config and overrides of its command."""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from dvla_hpc.config.loader import load_config

from .machine import CALIBRATION, load_calibration, machine_scenario
from .placement import place
from .simulate import run_all, simulate

RESULTS = Path(__file__).with_name("results")


def config_of(command: str):
    """The config and key=value overrides of a `dvla_hpc.main` command line."""
    words = shlex.split(command)
    config = words[words.index("--config") + 1]
    overrides = [w for w in words if "=" in w and not w.startswith("-")]
    return config, overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, default=Path("bench_out/scaling_model/wide"))
    parser.add_argument("--calibration", type=Path, default=CALIBRATION)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    cal = load_calibration(args.calibration)
    found = [json.loads(p.read_text()) for p in args.real.glob("results*.json")]
    runs = sorted(found, key=lambda r: r["ranks"])
    if not runs:
        print(f"no results*.json under {args.real}: run `python -m dvla_hpc.bench wide` first",
              file=sys.stderr)
        return 2
    scenarios = []
    for run in runs:
        cfg = load_config(*config_of(run["command"]))
        placement = place(run["ranks"], cfg.layout.learn_ranks, cfg.layout.infer_ranks)
        scenarios.append(machine_scenario(cal, placement, cfg.run.total_env_steps))
    rows = []
    for run, sc, res in zip(runs, scenarios, run_all([(simulate, sc) for sc in scenarios])):
        measured, predicted = run["env_steps_per_second"], res.admitted_steps_per_s
        rows.append({"ranks": run["ranks"], "sims": len(sc.placement.sims),
                     "infers": len(sc.placement.infers),
                     "measured_steps_per_s": measured, "predicted_steps_per_s": round(predicted, 1),
                     "error": round(predicted / measured - 1, 4), "bottleneck": res.bottleneck,
                     "utilisation": res.utilisation, "real_command": run["command"]})
    print(f"{'ranks':>5} {'sim/inf':>8} {'measured':>9} {'predicted':>10} {'error':>7}  model's busiest lane")
    for r in rows:
        print(f"{r['ranks']:>5} {r['sims']:>4}/{r['infers']:<3} {r['measured_steps_per_s']:>9.1f} "
              f"{r['predicted_steps_per_s']:>10.1f} {r['error']:>+7.1%}  {r['bottleneck']} "
              f"{r['utilisation']}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "validation.json").write_text(json.dumps({"calibration": cal, "runs": rows}, indent=1) + "\n")
    print(f"wrote {args.out / 'validation.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
