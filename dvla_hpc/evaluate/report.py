"""The evaluation's report: success per task and the suite mean, as a console table and eval.json."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from dvla_hpc.evaluate.rollout import EpisodeResult
from dvla_hpc.output.atomic import atomic_write


@dataclass(frozen=True)
class TaskScore:
    task: int
    instruction: str
    successes: int
    trials: int
    mean_env_steps: float

    @property
    def rate(self) -> float:
        return self.successes / self.trials


def score_tasks(results: list[EpisodeResult], tasks: list[int],
                instructions: tuple[str, ...]) -> list[TaskScore]:
    scores = []
    for task in tasks:
        mine = [r for r in results if r.task == task]
        scores.append(TaskScore(task, instructions[task], sum(r.success for r in mine), len(mine),
                                sum(r.env_steps for r in mine) / len(mine)))
    return scores


def suite_mean(scores: list[TaskScore]) -> float:
    """The mean of the per-task rates (every task has the same number of trials)."""
    return sum(s.rate for s in scores) / len(scores)


def format_table(scores: list[TaskScore], heading: str) -> str:
    lines = [heading, f"{'task':>4}  {'successes':>9}  {'rate':>6}  instruction"]
    for s in scores:
        lines.append(f"{s.task:>4}  {f'{s.successes}/{s.trials}':>9}  {s.rate:>6.1%}  {s.instruction}")
    trials = sum(s.trials for s in scores)
    successes = sum(s.successes for s in scores)
    lines.append(f"mean  {f'{successes}/{trials}':>9}  {suite_mean(scores):>6.1%}  "
                 f"over {len(scores)} task(s) x {scores[0].trials} trial(s) = {trials} episodes")
    return "\n".join(lines)


def episode_entries(results: list[EpisodeResult], state_of: Callable[[int], int | None]) -> list[dict]:
    """Each episode's result and the fixed initial state its seed selected (None: drawn from the seed)."""
    entries = []
    for r in results:
        entry = dataclasses.asdict(r)
        entry["initial_state"] = state_of(r.seed)
        entries.append(entry)
    return entries


def build_report(scores: list[TaskScore], results: list[EpisodeResult],
                 state_of: Callable[[int], int | None], about: dict) -> dict:
    """`about` (checkpoint, env, command, config, ...) comes first; then the scores and episodes."""
    return {
        **about,
        "suite_mean": suite_mean(scores),
        "successes": sum(s.successes for s in scores),
        "trials": sum(s.trials for s in scores),
        "tasks": [{**dataclasses.asdict(s), "rate": s.rate} for s in scores],
        "episodes": episode_entries(results, state_of),
    }


def write_report(path: Path, report: dict) -> None:
    text = json.dumps(report, indent=2) + "\n"
    atomic_write(path, lambda file: file.write(text.encode("utf-8")))
