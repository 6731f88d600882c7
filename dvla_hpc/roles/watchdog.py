"""Hung and dead ranks: a rank that has been silent on the control plane for
`run.heartbeat_timeout_s` ends the job with a message naming it. The learner root watches every
other rank (their heartbeats); every other rank watches the root (its heartbeats)."""
from __future__ import annotations

import time
from typing import Callable, Iterable

from dvla_hpc.runtime.signals import JobFault


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
