"""One way to wait for something that can only be polled: sleep 50 us (or a longer first sleep),
doubling up to a cap.

A blocking MPI call spins a whole core; a fixed short sleep burns the GIL for the whole run.
Backoff answers fast when the thing is about to happen and costs next to nothing when it is not."""
from __future__ import annotations

import threading
import time
from typing import Callable

from mpi4py import MPI

FIRST_SLEEP_S = 50e-6


class Backoff:
    """`idle()` after a poll that found nothing, `reset()` after one that found work."""

    def __init__(self, max_sleep_s: float = 2e-3, first_sleep_s: float = FIRST_SLEEP_S):
        self.max_sleep_s = max_sleep_s
        self.first_sleep_s = first_sleep_s
        self.delay = first_sleep_s

    def idle(self, wake: threading.Event | None = None) -> None:
        """Sleep the current delay, or until `wake` is set if that comes first."""
        if wake is None:
            time.sleep(self.delay)
        else:
            wake.wait(self.delay)
        self.delay = min(self.delay * 2, self.max_sleep_s)

    def reset(self) -> None:
        self.delay = self.first_sleep_s


def poll_until(done: Callable[[], bool], timeout_s: float | None = None, what: str = "",
               max_sleep_s: float = 2e-3) -> None:
    backoff = Backoff(max_sleep_s)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while not done():
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"{what or 'a polled operation'} not done within {timeout_s:.0f}s")
        backoff.idle()


def wait_requests(*requests: MPI.Request, timeout_s: float | None = None, what: str = "") -> None:
    """Complete non-blocking MPI requests without spinning a core."""
    poll_until(lambda: MPI.Request.Testall(list(requests)), timeout_s, what)
