"""A lane: one thread running one loop, timing its busy and waiting shares."""
from __future__ import annotations

import os
import queue
import threading
import time
import traceback
import weakref
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

from dvla_hpc.runtime.reports import LaneReport

T = TypeVar("T")


class WakePipe:
    """A pipe whose read end turns readable when `notify` is called: lets a thread that waits on
    file handles (worker pipes, via `multiprocessing.connection.wait`) also wake for a queue."""

    def __init__(self):
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        weakref.finalize(self, _close_fds, self._read, self._write)

    def fileno(self) -> int:
        return self._read

    def notify(self) -> None:
        try:
            os.write(self._write, b"\0")
        except BlockingIOError:  # the pipe is full, so it is readable already
            pass

    def clear(self) -> None:
        try:
            while os.read(self._read, 4096):
                pass
        except BlockingIOError:
            pass


def _close_fds(*fds: int) -> None:
    for fd in fds:
        os.close(fd)


class SlotQueue:
    """Bounded queue of slot ids between lanes: full means backpressure, never an allocation.
    A wakeable queue also has a `wake` handle, readable once a slot has been put since the last
    `get_nowait`: its consumer can wait on it beside other file handles."""

    def __init__(self, capacity: int, name: str, wakeable: bool = False):
        self.name = name
        self._q: queue.Queue[int] = queue.Queue(maxsize=capacity)
        self.wake = WakePipe() if wakeable else None
        self._put_events: list[threading.Event] = []

    def set_on_put(self, event: threading.Event) -> None:
        """Set `event` whenever a slot is put: a thread that polls several things (the data pump)
        sleeps on it, so a slot put into this queue ends its sleep."""
        self._put_events.append(event)

    def put(self, slot: int, stop: threading.Event) -> bool:
        while not stop.is_set():
            try:
                self._q.put(slot, timeout=0.05)
                self._notify()
                return True
            except queue.Full:
                continue
        return False

    def put_nowait(self, slot: int) -> bool:
        try:
            self._q.put_nowait(slot)
        except queue.Full:
            return False
        self._notify()
        return True

    def _notify(self) -> None:
        if self.wake is not None:
            self.wake.notify()
        for event in self._put_events:
            event.set()

    def get(self, timeout: float) -> int | None:
        try:
            return self._q.get(timeout=timeout)
        except queue.Empty:
            return None

    def get_nowait(self) -> int | None:
        """A slot if one is queued. Clears the wake handle first, so a slot put after this call
        always leaves it readable: waiting on it after a None never misses that slot."""
        if self.wake is not None:
            self.wake.clear()
        try:
            return self._q.get_nowait()
        except queue.Empty:
            return None

    def qsize(self) -> int:
        return self._q.qsize()


class Lane(threading.Thread):
    """Subclasses implement `loop()`, which runs until `self.stop` is set, and wrap every wait
    in `with self.waiting():` so the run can tell which lane is the bottleneck. Within that split,
    `with self.copying():` marks busy time spent moving bytes, and `with self.polling():` marks
    waiting spent sleeping between polls, for the report's compute/copy/wait/poll breakdown."""

    finish_timeout_s: float | None = 30.0  # how long a stopped lane may take to finish

    def __init__(self, name: str, stop: threading.Event, failed: threading.Event):
        super().__init__(name=name, daemon=True)
        self.stop = stop
        self.failed = failed
        self.error: BaseException | None = None
        self.error_text = ""
        self.wait_s = 0.0
        self.copy_s = 0.0
        self.poll_s = 0.0
        self.started_at = 0.0
        self.finished_at = 0.0
        self.final_cpu_s: float | None = None
        self.items = 0

    def waiting(self):
        return self._timing("wait_s")

    def copying(self):
        return self._timing("copy_s")

    def polling(self):
        """A sleep between polls: waiting, told apart in the report."""
        return self._timing("wait_s", "poll_s")

    @contextmanager
    def _timing(self, *totals: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - t0
            for name in totals:
                setattr(self, name, getattr(self, name) + elapsed)

    def each(self, take: Callable[[float], T | None]) -> Iterator[T]:
        """What `take(timeout)` hands over, one item at a time (its waits counted), until stop."""
        while not self.stop.is_set():
            with self.waiting():
                item = take(0.05)
            if item is not None:
                yield item

    def acquire_slot(self, pool) -> int | None:
        """A free slot of `pool`, waiting (counted as waiting) until one frees up; None on stop."""
        return next(self.each(pool.acquire), None)

    def run(self) -> None:
        self.started_at = time.perf_counter()
        try:
            self.loop()
        except BaseException as err:  # noqa: BLE001 - recorded, then re-raised by the runner
            self.error = err
            self.error_text = traceback.format_exc()
            self.failed.set()
            self.stop.set()
        finally:
            self.finished_at = time.perf_counter()
            self.final_cpu_s = time.thread_time()
            self.close()

    def finish(self) -> None:
        """Wait for the stopped lane to leave its loop (up to finish_timeout_s)."""
        self.join(timeout=self.finish_timeout_s)

    def loop(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the lane owns; runs on the lane's thread after the loop ends."""

    def counters(self) -> dict[str, float]:
        """The lane's own counters, named as runtime/reports.py lays them out."""
        return {}

    def cpu_seconds(self) -> float:
        """CPU seconds of the lane's thread so far: its whole life once it has finished."""
        if self.final_cpu_s is not None:
            return self.final_cpu_s
        if self.ident is None:
            return 0.0
        try:
            return time.clock_gettime(time.pthread_getcpuclockid(self.ident))
        except OSError:  # the thread ended between the two checks
            return self.final_cpu_s or 0.0

    def report(self) -> LaneReport:
        end = self.finished_at or time.perf_counter()
        total = max(end - self.started_at, 1e-9) if self.started_at else 1e-9
        wait = min(self.wait_s, total)
        copy = min(self.copy_s, total - wait)
        return LaneReport(self.name, round((total - wait) / total, 4), round(wait / total, 4),
                          self.items, round(total, 3), self.counters(), copy=round(copy / total, 4),
                          poll=round(min(self.poll_s, wait) / total, 4), cpu_seconds=round(self.cpu_seconds(), 4))
