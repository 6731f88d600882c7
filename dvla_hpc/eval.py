"""Evaluate a checkpoint: `[mpiexec -n N] python -m dvla_hpc.eval --checkpoint CKPT [options]
[section.key=value ...]`.

Every selected task runs `--trials-per-task` episodes; trial j resets with seed `--seed + j`, or
for LIBERO takes fixed initial state (`--seed` + j) % 50: with seed 0, the published protocol of 50
trials from the suite's 50 fixed initial states, under the suite's step cap. Actions are greedy (the
most likely bin of each action dimension) unless `--sample`. The episodes are spread round-robin
over the ranks; each rank steps its envs in lockstep with one batched policy call per step.
Per-episode results depend on the checkpoint, the seed and --envs-per-rank, never on the rank
count. Rank 0 prints success per task and the suite mean and writes eval.json (per task, per
episode, the config and the command)."""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time

from dvla_hpc.evaluate.request import EvalArgs


class ArgumentProblem(ValueError):
    pass


class _OneLineParser(argparse.ArgumentParser):
    """Reports a bad command line as one line, through the same all-ranks refusal as other bad input."""

    def error(self, message: str):
        raise ArgumentProblem(f"{message} (see --help)")


def parse_args(argv: list[str]) -> EvalArgs:
    parser = _OneLineParser(prog="python -m dvla_hpc.eval", description=__doc__.split("\n\n")[1],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True,
                        help="checkpoint file, or a run directory (its newest checkpoint)")
    parser.add_argument("--suite", help="LIBERO suite to evaluate on (overrides env.suite): "
                                        "spatial, object, goal, 10, 90")
    parser.add_argument("--tasks", help="task ids, comma-separated (default: the tasks the checkpoint "
                                        "trained on if it named some, else every task)")
    parser.add_argument("--trials-per-task", type=int, default=50, dest="trials")
    parser.add_argument("--seed", type=int, default=0,
                        help="trial j resets with seed + j (LIBERO: takes initial state (seed + j) %% 50)")
    parser.add_argument("--out", help="output directory (default: <run>/eval-<env>-<time>/)")
    parser.add_argument("--record", action="store_true",
                        help="write every evaluated episode to HDF5 under <out>/trajectories")
    parser.add_argument("--max-steps", type=int, help=(
        "step cap per episode, in simulator steps; departs from the published protocol (LIBERO: "
        "220/280/300/520/400 for spatial/object/goal/10/90): for quick checks only"))
    parser.add_argument("--envs-per-rank", type=int, default=1,
                        help="envs each rank steps in lockstep, batched into one policy call")
    parser.add_argument("--sample", action="store_true",
                        help="sample actions (one seeded generator per episode) instead of greedy")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="config overrides on top of the checkpoint's config (e.g. run.device=cpu)")
    args = parser.parse_intermixed_args(argv)
    return EvalArgs(args.checkpoint, args.suite, args.tasks, args.trials, args.seed, args.out,
                    args.record, args.max_steps, args.envs_per_rank, args.sample, tuple(args.overrides))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args, problem = None, None
    try:
        args = parse_args(argv)
    except ArgumentProblem as err:
        problem = str(err)
    os.environ.setdefault("MUJOCO_GL", "egl")
    from dvla_hpc.runtime.launch_check import join_world  # after parsing: `--help` needs no MPI
    world = join_world()
    if world is None:
        return 2
    from dvla_hpc.evaluate.session import EvalSession, agree_on_time, refused
    started = agree_on_time(world)
    session = None
    if args is not None:
        session, problem = EvalSession.prepare(args, world, started)
    if refused(world, problem):
        return 2
    results = session.run()
    if world.Get_rank() == 0:
        command = shlex.join(["python", "-m", "dvla_hpc.eval", *argv])
        if world.Get_size() > 1:
            command = f"mpiexec -n {world.Get_size()} {command}"
        session.report(results, command, time.time() - started)
    session.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
