"""Measure what the model needs on this machine and write it as JSON.

    OMP_NUM_THREADS=1 flock /tmp/dvla-bench.lock python -m analysis.scaling_model.calibrate \
        [--config configs/wide.yaml] [--seconds 10] [--out analysis/scaling_model/calibration.json]

Lane costs: `dvla_hpc.bench.lane_costs.measure` (each lane's real code, alone, at the config's batch
sizes). MPI: `pingpong.py` under this venv's mpiexec. The data plane's CPU per slab and an idle
rank's CPU: `pump_probe.py`. Sizes: the config's slab layouts and parameter
count. Nothing here is typed in by hand."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from dvla_hpc.bench.lane_costs import measure
from dvla_hpc.bench.runs import BENCH_ENV, mpiexec
from dvla_hpc.config.loader import load_config
from dvla_hpc.model.presets import count_parameters
from dvla_hpc.runtime.blueprint import Blueprint

DEFAULT_OUT = Path(__file__).with_name("calibration.json")


def two_ranks(module: str, *args: str) -> dict:
    """Run `module` under `mpiexec -n 2`; it writes JSON to the path given as its first argument."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        subprocess.run([mpiexec(), "-n", "2", sys.executable, "-m", module, str(out), *args],
                       check=True, env={**os.environ, **BENCH_ENV})
        return json.loads(out.read_text())


def workload(cfg, bp: Blueprint) -> dict:
    t = bp.spec.max_episode_steps
    return {"envs_per_sampler": cfg.env.envs_per_sampler, "max_episode_steps": t,
            "group_size": cfg.learn.group_size, "groups_per_update": cfg.learn.groups_per_update,
            "flow_versions_ahead": cfg.pipeline.flow_versions_ahead,
            "max_policy_lag": cfg.learn.max_policy_lag,
            "poll_max_sleep_s": cfg.pipeline.poll_max_sleep_ms / 1000,
            "obs_bytes": bp.obs_layout.nbytes, "action_bytes": bp.action_layout.nbytes,
            "episode_bytes_per_step": bp.episode_layout.nbytes // t,
            "weight_bytes": 4 * count_parameters(cfg.model, bp.spec)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/wide.yaml")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    costs = measure(cfg, args.seconds)
    calibration = {
        "command": " ".join(["python -m analysis.scaling_model.calibrate", *(argv or sys.argv[1:])]),
        "config": args.config, "overrides": args.overrides, "cores": os.cpu_count(),
        "lanes": {name: {"wall_per_step_s": c.wall_per_step, "cpu_per_step_s": c.cpu_per_step,
                         "steps": c.steps}
                  for name, c in costs.items()},
        "mpi": two_ranks("analysis.scaling_model.pingpong"),
        "data_plane": two_ranks("analysis.scaling_model.pump_probe", "--config", args.config,
                                *args.overrides),
        "workload": workload(cfg, Blueprint.from_config(cfg)),
    }
    args.out.write_text(json.dumps(calibration, indent=1) + "\n")
    lanes = calibration["lanes"]
    print(" ".join(f"{n} {v['wall_per_step_s'] * 1e3:.3f} ms/step" for n, v in lanes.items()))
    dp = calibration["data_plane"]
    print(f"data plane: {dp['sim_cpu_per_round_trip_s'] * 1e6:.0f} + "
          f"{dp['infer_cpu_per_round_trip_s'] * 1e6:.0f} us "
          f"CPU per slab round trip; idle rank {dp['idle_cpu_share']:.2%} of a core")
    print(f"MPI latency {calibration['mpi']['latency_s'] * 1e6:.1f} us, "
          f"bandwidth {calibration['mpi']['bandwidth_Bps'] / 1e9:.2f} GB/s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
