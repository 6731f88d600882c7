"""Hung and dead ranks: a rank that has been silent on the control plane for
`run.heartbeat_timeout_s` ends the job with a message naming it.

Ranks watch each other along a k-ary tree over the world rooted at the learner root: every rank
beats to, and watches, its parent and children, so each rank's liveness traffic is constant and
the root hears from k ranks whatever the world's size. Telemetry reaches the root apart, at a
period that keeps its inbound rate constant too (`telemetry_every_s`)."""
from __future__ import annotations

import time
from typing import Callable, Iterable

from dvla_hpc.runtime.signals import JobFault

WATCH_FANOUT = 8
ROOT_TELEMETRY_PER_S = 16.0  # heartbeats with telemetry the root absorbs per second, at any scale


def watch_neighbours(world_size: int, root: int, rank: int, fanout: int = WATCH_FANOUT) -> list[int]:
    """`rank`'s parent (first; none for the root) and children in the watch tree."""
    order = [root, *(r for r in range(world_size) if r != root)]
    position = order.index(rank)
    parent = [order[(position - 1) // fanout]] if position else []
    return parent + order[position * fanout + 1: position * fanout + 1 + fanout]


def telemetry_every_s(world_size: int, beat_every_s: float) -> float:
    """How often each rank sends the root its telemetry: the liveness period on small jobs,
    longer on big ones, so the root absorbs at most ROOT_TELEMETRY_PER_S of them."""
    return max(beat_every_s, (world_size - 1) / ROOT_TELEMETRY_PER_S)


class RankSilent(JobFault):
    """A watched rank sent nothing within the timeout: hung (stopped, deadlocked) or gone."""


class SilenceWatch:
    def __init__(self, ranks: Iterable[int], timeout_s: float, describe: Callable[[int], str],
                 clock: Callable[[], float] = time.monotonic):
        self.timeout_s, self.describe, self.clock = timeout_s, describe, clock
        start = clock()
        self.last_heard = {rank: start for rank in ranks}

    def heard(self, rank: int) -> None:
        if rank in self.last_heard:
            self.last_heard[rank] = self.clock()

    def check(self) -> None:
        """Raise RankSilent naming the longest-silent rank past the timeout (timeout 0: never)."""
        if not self.timeout_s or not self.last_heard:
            return
        rank, last = min(self.last_heard.items(), key=lambda item: item[1])
        silent = self.clock() - last
        if silent > self.timeout_s:
            raise RankSilent(f"{self.describe(rank)} has sent nothing for {silent:.1f} s "
                             f"(run.heartbeat_timeout_s={self.timeout_s:g}): hung or dead; ending the job")
