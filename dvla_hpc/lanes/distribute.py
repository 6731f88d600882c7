"""Parameter-distribution lane: moves each published version into the weight holders' staging buffer."""
from __future__ import annotations

import threading
import time

import torch

from dvla_hpc.lanes.lane import Lane
from dvla_hpc.memory.static_pool import DoubleBufferedWeights


class WeightPublisher:
    """Learner side of the static pool: an outgoing buffer the learner copies a version into.
    The learner never waits: while a version is still travelling, a newer one is skipped and counted."""

    def __init__(self, source: torch.Tensor):
        self.source = source
        self.outgoing = torch.empty_like(source)
        self.version = -1
        self.skipped = 0
        self._pending = False
        self._busy = False
        self._cond = threading.Condition()

    def publish(self, version: int) -> None:
        with self._cond:
            if self._busy or self._pending:
                self.skipped += 1
                return
            self.outgoing.copy_(self.source)
            self.version = version
            self._pending = True
            self._cond.notify()

    def take(self, timeout: float) -> int | None:
        with self._cond:
            if not self._cond.wait_for(lambda: self._pending, timeout):
                return None
            self._pending, self._busy = False, True
            return self.version

    def sent(self) -> None:
        with self._cond:
            self._busy = False


class LocalDistributeLane(Lane):
    """Single-process mode: the 'tree' is one memcpy into the staging buffer."""

    def __init__(self, publisher: WeightPublisher, holder: DoubleBufferedWeights, stop, failed):
        super().__init__("distribute", stop, failed)
        self.publisher, self.holder = publisher, holder
        self.latency_s: list[float] = []

    def loop(self) -> None:
        while not self.stop.is_set():
            with self.waiting():
                version = self.publisher.take(timeout=0.05)
            if version is None:
                continue
            t0 = time.perf_counter()
            staging = None
            while staging is None and not self.stop.is_set():
                with self.waiting():
                    staging = self.holder.staging_buffer(timeout=0.05)
            if staging is None:
                return
            staging.copy_(self.publisher.outgoing)
            self.holder.mark_staged(version)
            self.publisher.sent()
            self.latency_s.append(time.perf_counter() - t0)
            self.items += 1
