"""What the user asked for, checked against the checkpoint: the config to evaluate under, the
tasks, trials and seed. Every check raises EvalInputError naming the argument."""
from __future__ import annotations

import typing
from dataclasses import dataclass
from pathlib import Path

from dvla_hpc.config.schema import Config, EnvConfig
from dvla_hpc.evaluate.checkpoint_source import (EvalInputError, checkpoint_config_text, config_from_text,
                                                 checkpoint_to_evaluate, read_checkpoint)
from dvla_hpc.evaluate.plan import MAX_SEED
from dvla_hpc.output.checkpoint import Checkpoint

LIBERO = "libero"
SUITES = typing.get_args(typing.get_type_hints(EnvConfig)["suite"])


@dataclass(frozen=True)
class EvalArgs:
    """The command line of `python -m dvla_hpc.eval`, parsed but not yet checked."""
    checkpoint: str
    suite: str | None
    tasks: str | None
    trials: int
    seed: int
    out: str | None
    record: bool
    max_steps: int | None
    envs_per_rank: int
    sample: bool
    overrides: tuple[str, ...]


@dataclass
class EvalRequest:
    checkpoint_path: Path
    checkpoint: Checkpoint
    cfg: Config  # the checkpoint's config with the evaluation's overrides
    default_tasks: list[int] | None  # the tasks the checkpoint trained on, when it named some
    trials: int
    seed: int
    envs_per_rank: int
    sample: bool
    record: bool
    protocol_departures: list[str]  # why the numbers are not the published protocol's; empty if they are


def build_request(args: EvalArgs) -> EvalRequest:
    check_counts(args)
    path = checkpoint_to_evaluate(args.checkpoint)
    ckpt = read_checkpoint(path)
    text = checkpoint_config_text(path, ckpt)
    trained = config_from_text(text, [])
    overrides = []
    if trained.env.name == LIBERO:
        # the whole suite (task ids are the suite's) and its published step cap, whatever training used
        overrides += ["env.tasks=", "env.max_episode_steps=0"]
    overrides += args.overrides
    departures = []
    if args.suite is not None:
        if trained.env.name != LIBERO:
            raise EvalInputError(f"--suite: the checkpoint's env is {trained.env.name}, not {LIBERO}; "
                                 f"--suite applies to LIBERO checkpoints only")
        if args.suite not in SUITES:
            raise EvalInputError(f"--suite: {args.suite!r} is not one of {', '.join(SUITES)}")
        overrides.append(f"env.suite={args.suite}")
    if args.max_steps is not None:
        overrides.append(f"env.max_episode_steps={args.max_steps}")
    cfg = config_from_text(text, overrides)
    if cfg.env.name == LIBERO and cfg.env.max_episode_steps:
        departures.append(f"step cap {cfg.env.max_episode_steps} instead of the suite's")
    if args.sample:
        departures.append("sampled actions instead of greedy")
    default_tasks = None
    if trained.env.name == LIBERO and trained.env.tasks and cfg.env.suite == trained.env.suite:
        default_tasks = parse_task_ids(trained.env.tasks, "the checkpoint's env.tasks")
    return EvalRequest(path, ckpt, cfg, default_tasks, args.trials, args.seed, args.envs_per_rank,
                       args.sample, args.record, departures)


def check_counts(args: EvalArgs) -> None:
    if args.trials < 1:
        raise EvalInputError(f"--trials-per-task: {args.trials} is below 1")
    if args.envs_per_rank < 1:
        raise EvalInputError(f"--envs-per-rank: {args.envs_per_rank} is below 1")
    if args.max_steps is not None and args.max_steps < 1:
        raise EvalInputError(f"--max-steps: {args.max_steps} is below 1")
    if not 0 <= args.seed <= MAX_SEED - args.trials:
        raise EvalInputError(f"--seed: {args.seed} is outside 0..{MAX_SEED - args.trials} "
                             f"(trial seeds are seed + trial)")


def parse_task_ids(text: str, where: str) -> list[int]:
    try:
        ids = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise EvalInputError(f"{where}: {text!r} is not a comma-separated list of task ids") from None
    if not ids:
        raise EvalInputError(f"{where}: {text!r} names no task")
    if len(set(ids)) != len(ids):
        raise EvalInputError(f"{where}: {text!r} names a task twice")
    return ids


def select_tasks(text: str | None, default: list[int] | None, catalogue: tuple[str, ...],
                 env_label: str) -> list[int]:
    """--tasks, else the checkpoint's own tasks, else every task; each checked against the catalogue."""
    ids = parse_task_ids(text, "--tasks") if text is not None else default or list(range(len(catalogue)))
    for task in ids:
        if not 0 <= task < len(catalogue):
            raise EvalInputError(f"--tasks: task {task} is out of range; {env_label} has "
                                 f"{len(catalogue)} tasks (0-{len(catalogue) - 1})")
    return ids


def env_label(cfg: Config) -> str:
    return f"{LIBERO}-{cfg.env.suite}" if cfg.env.name == LIBERO else cfg.env.name
