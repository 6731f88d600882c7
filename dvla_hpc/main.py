"""Entry point: `[mpiexec -n N] python -m dvla_hpc.main [--config X.yaml] [--out DIR] [key=value ...]`."""
from __future__ import annotations

import argparse
import os
import sys

from dvla_hpc.config.loader import DEFAULT_CONFIG, ConfigError, load_config
from dvla_hpc.output.summary import format_summary_table, write_summary


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m dvla_hpc.main",
        description="Asynchronous RL fine-tuning of a VLA policy (one process, or one MPI job).")
    parser.add_argument("--config", help="YAML config (default: quickstart; with --resume DIR, the config "
                                         "DIR's run started with)")
    parser.add_argument("--out", help="run directory (same as run.out=DIR)")
    parser.add_argument("--resume", help="checkpoint file or run directory to resume (run.resume=...)")
    parser.add_argument("--init-from", help="checkpoint file, or run or SFT directory, whose weights start "
                                            "the run at version 0 with a fresh optimiser (run.init_from=...)")
    parser.add_argument("--plan", action="store_true",
                        help="print the layout, roles, devices and memory plan, then exit without training")
    parser.add_argument("--ranks", type=int, default=0,
                        help="with --plan: plan for this many MPI ranks (default: this job's world size)")
    parser.add_argument("--gpus-per-node", type=int, default=None,
                        help="with --plan: assume each node shows this many GPUs (default: as this one)")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value")
    return parser.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    overrides = list(args.overrides)
    if args.out:
        overrides.append(f"run.out={args.out}")
    if args.resume:
        overrides.append(f"run.resume={args.resume}")
    if args.init_from:
        overrides.append(f"run.init_from={args.init_from}")
    os.environ.setdefault("MUJOCO_GL", "egl")
    from dvla_hpc.runtime.launch_check import join_world  # after parsing: `--help` needs no MPI
    world = join_world()
    if world is None:
        return 2
    from dvla_hpc.runtime.run_dir import resolve_run_dir, resumed_config
    from dvla_hpc.runtime.signals import StopRequest
    config_path, stored = args.config or DEFAULT_CONFIG, []
    in_place = not args.out and not any(item.startswith("run.out=") for item in args.overrides)
    if args.resume and in_place and not args.config and (found := resumed_config(args.resume)) is not None:
        config_path, stored = found, ["run.out=", "run.init_from="]  # the stored run's own, not its path
    try:
        cfg = load_config(config_path, [*stored, *overrides])
    except ConfigError as err:
        if world.Get_rank() == 0:
            print(f"config error: {err}", file=sys.stderr)
        return 2
    if args.plan:
        if world.Get_rank() != 0:
            return 0
        return print_plan(cfg, args.ranks or world.Get_size(), args.gpus_per_node)
    if (cfg.run.init_from or cfg.run.resume) and refuse_starting_weights(cfg, world):
        return 2
    stop_request = StopRequest()
    stop_request.install()

    run_dir = resolve_run_dir(cfg)
    if world.Get_size() == 1:
        from dvla_hpc.memory.plan import PlanRefused
        from dvla_hpc.runtime.devices import DeviceError
        from dvla_hpc.runtime.local_run import run_local
        try:
            summary = run_local(cfg, run_dir, stop_request)
        except (ConfigError, DeviceError, PlanRefused) as err:
            kind = {ConfigError: "config", DeviceError: "device", PlanRefused: "memory"}[type(err)]
            print(f"{kind} error: {err}", file=sys.stderr)
            return 2
    else:
        from dvla_hpc.runtime.mpi_run import run_mpi
        summary = run_mpi(cfg, run_dir, world, stop_request)
    if summary is not None:
        write_summary(run_dir / "summary.json", summary)
        print(format_summary_table(summary))
        print(f"run directory: {run_dir}")
    return 0


def refuse_starting_weights(cfg, world) -> bool:
    """Rank 0 checks that the checkpoint of run.init_from or run.resume fits the model; every rank
    learns the verdict, so a misfit ends the whole job with one message and exit code 2 before
    anything starts."""
    import numpy as np

    from dvla_hpc.planes.backoff import wait_requests
    problem = None
    if world.Get_rank() == 0:  # the others (sim ranks among them) need not import torch for it
        from dvla_hpc.runtime.init_from import starting_weights_problem
        problem = starting_weights_problem(cfg)
    verdict = np.array([problem is not None], dtype=np.int64)
    wait_requests(world.Ibcast(verdict, root=0), what="starting weights check")
    if problem is not None:
        print(f"config error: {problem}", file=sys.stderr)
    return bool(verdict[0])


def print_plan(cfg, ranks: int, gpus_per_node: int | None) -> int:
    from dvla_hpc.runtime.devices import DeviceError
    from dvla_hpc.runtime.plan_report import describe_plan
    from dvla_hpc.runtime.topology import LayoutError
    try:
        print(describe_plan(cfg, ranks, gpus_per_node))
    except (ConfigError, DeviceError, LayoutError) as err:
        print(f"plan error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
