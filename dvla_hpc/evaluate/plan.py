"""Which episodes an evaluation runs, and which rank runs each.

Trial j of every task resets with seed `seed + j`. For envs with fixed initial states (LIBERO) a
reset seed s starts from state s % initial_states (envs/protocol.py), so with seed 0 the 50 trials
of a task are its 50 fixed initial states in order (the published protocol)."""
from __future__ import annotations

from dataclasses import dataclass

from dvla_hpc.envs.protocol import EnvSpec

MAX_SEED = 2**31 - 1


@dataclass(frozen=True)
class PlannedEpisode:
    task: int
    trial: int
    seed: int


def initial_state_of(seed: int, spec: EnvSpec) -> int | None:
    """The fixed initial state a reset seed selects, or None for envs that draw the state from the seed."""
    return seed % spec.initial_states if spec.initial_states else None


def plan_episodes(tasks: list[int], trials: int, seed: int, spec: EnvSpec) -> list[PlannedEpisode]:
    """Every (task, trial) pair, ordered by task then trial."""
    return [PlannedEpisode(task, j, seed + j) for task in tasks for j in range(trials)]


def rank_share(plan: list[PlannedEpisode], rank: int, ranks: int) -> list[PlannedEpisode]:
    """Round-robin: episode k goes to rank k % ranks, which balances tasks of unequal lengths."""
    return plan[rank::ranks]


def share_sizes(episodes: int, ranks: int) -> list[int]:
    return [len(range(rank, episodes, ranks)) for rank in range(ranks)]
