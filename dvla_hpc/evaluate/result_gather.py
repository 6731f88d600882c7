"""Every rank's episode results to rank 0, as one float64 row per episode (no pickle on the wire).
Rank 0 knows each rank's share from the plan, so no sizes travel first."""
from __future__ import annotations

import dataclasses
import typing

import numpy as np
from mpi4py import MPI

from dvla_hpc.evaluate.rollout import EpisodeResult
from dvla_hpc.planes.backoff import wait_requests

FIELDS = tuple(f.name for f in dataclasses.fields(EpisodeResult))
_TYPES = typing.get_type_hints(EpisodeResult)


def to_rows(results: list[EpisodeResult]) -> np.ndarray:
    rows = np.zeros((len(results), len(FIELDS)), dtype=np.float64)  # ints stay exact below 2**53
    for i, result in enumerate(results):
        rows[i] = [float(getattr(result, name)) for name in FIELDS]
    return rows


def from_rows(rows: np.ndarray) -> list[EpisodeResult]:
    return [EpisodeResult(**{name: _TYPES[name](value) for name, value in zip(FIELDS, row)})
            for row in rows]


def gather_results(world: MPI.Comm, mine: list[EpisodeResult],
                   sizes: list[int]) -> list[EpisodeResult] | None:
    """All results, ordered by (task, trial), on rank 0; None elsewhere."""
    rank = world.Get_rank()
    if len(mine) != sizes[rank]:
        raise RuntimeError(f"rank {rank} ran {len(mine)} episodes, its share is {sizes[rank]}")
    rows = to_rows(mine)
    if world.Get_size() == 1:
        everything = rows
    else:
        width = len(FIELDS)
        counts = [size * width for size in sizes]
        everything = np.empty((sum(sizes), width), dtype=np.float64) if world.Get_rank() == 0 else None
        receive = [everything, counts, list(np.cumsum([0, *counts[:-1]])), MPI.DOUBLE] \
            if everything is not None else None
        wait_requests(world.Igatherv([rows, MPI.DOUBLE], receive, root=0), what="result gather")
    if world.Get_rank() != 0:
        return None
    return sorted(from_rows(everything), key=lambda r: (r.task, r.trial))
