"""Parameter-distribution lane: moves each published version into the weight holders' staging buffer."""
from __future__ import annotations

import threading
import time

import torch

from dvla_hpc.lanes.lane import Lane
from dvla_hpc.memory.accounting import DATA_PATH
from dvla_hpc.memory.static_pool import DoubleBufferedWeights
from dvla_hpc.planes.backoff import Backoff


class WeightPublisher:
    """Learner side of the static pool: an outgoing buffer the learner copies a version into, on
    the device the data plane carries it from. The learner never waits: while a version is still
    travelling, a newer one is skipped and counted."""

    def __init__(self, source: torch.Tensor, wire_device: torch.device | None = None):
        self.source = source
        self.outgoing = DATA_PATH.zeros("weights/outgoing", tuple(source.shape), source.dtype,
                                        wire_device or source.device)
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


class PublishingLane(Lane):
    """Learner side: takes each published version and delivers it; subclasses say how."""

    def __init__(self, publisher: WeightPublisher, stop, failed):
        super().__init__("distribute", stop, failed)
        self.publisher = publisher
        self.latency_s: list[float] = []

    def counters(self) -> dict[str, float]:
        return {"versions": self.items}

    def loop(self) -> None:
        for version in self.each(self.publisher.take):
            t0 = time.perf_counter()
            if not self.deliver(version):
                return
            self.publisher.sent()
            self.latency_s.append(time.perf_counter() - t0)
            self.items += 1

    def deliver(self, version: int) -> bool:
        raise NotImplementedError


class LocalDistributeLane(PublishingLane):
    """Single-process mode: the 'tree' is one memcpy into the staging buffer."""

    def __init__(self, publisher: WeightPublisher, holder: DoubleBufferedWeights, stop, failed):
        super().__init__(publisher, stop, failed)
        self.holder = holder

    def deliver(self, version: int) -> bool:
        staging = next(self.each(self.holder.staging_buffer), None)
        if staging is None:
            return False
        with self.copying():
            staging.copy_(self.publisher.outgoing)
        self.holder.mark_staged(version)
        return True


class TreeSendLane(PublishingLane):
    """MPI mode, learner root: each published version goes down the broadcast tree."""

    def __init__(self, tree, publisher: WeightPublisher, stop, failed):
        super().__init__(publisher, stop, failed)
        self.tree = tree

    def deliver(self, version: int) -> bool:
        self.tree.start(version, self.publisher.outgoing)
        backoff = Backoff()
        while not self.tree.progress():
            with self.polling():
                backoff.idle()
        return True

    def close(self) -> None:
        self.tree.cancel()


class TreeReceiveLane(Lane):
    """MPI mode, weight holder: receives each version into the staging buffer (forwarding chunks
    to its children on the way) and marks it ready for a swap. `wire` is a host buffer to receive
    into when the data plane cannot reach the staging buffer's device (mpi4py and a GPU holder)."""

    def __init__(self, tree, holder: DoubleBufferedWeights, stop, failed, wire: torch.Tensor | None = None):
        super().__init__("distribute", stop, failed)
        self.tree, self.holder, self.wire = tree, holder, wire

    def counters(self) -> dict[str, float]:
        return {"versions": self.items}

    def loop(self) -> None:
        for staging in self.each(self.holder.staging_buffer):
            target = staging if self.wire is None else self.wire
            self.tree.post_receive(target)
            backoff = Backoff()
            version = None
            while version is None:
                version = self.tree.progress()
                if version is None:
                    if self.stop.is_set() and not self.tree.in_flight:
                        return
                    with self.polling():
                        backoff.idle()
            if target is not staging:
                with self.copying():
                    staging.copy_(target)
            self.holder.mark_staged(version)
            self.items += 1

    def close(self) -> None:
        self.tree.cancel()
