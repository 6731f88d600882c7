"""Shared by the MPI test scripts: abort the whole job on any rank's error, poll with backoff."""
from __future__ import annotations

import sys
import threading
import time
import traceback
from typing import Callable, TypeVar

from mpi4py import MPI

T = TypeVar("T")


def install_abort_hooks() -> None:
    def abort(exc_type, exc, tb) -> None:
        # One write, then a pause: mpiexec can tear down its stdio forwarding on Abort before
        # it has relayed a traceback written in pieces.
        report = "".join(traceback.format_exception(exc_type, exc, tb))
        sys.stderr.write(f"rank {MPI.COMM_WORLD.Get_rank()} failed:\n{report}")
        sys.stderr.flush()
        time.sleep(0.2)
        MPI.COMM_WORLD.Abort(1)

    sys.excepthook = abort
    threading.excepthook = lambda args: abort(args.exc_type, args.exc_value, args.exc_traceback)


def poll(step: Callable[[], T | None | bool], what: str, timeout_s: float = 20.0) -> T:
    """Call `step` until it returns something other than None/False, sleeping 50 us .. 2 ms."""
    delay, deadline = 50e-6, time.monotonic() + timeout_s
    while True:
        result = step()
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"rank {MPI.COMM_WORLD.Get_rank()}: {what} not done in {timeout_s}s")
        time.sleep(delay)
        delay = min(delay * 2, 2e-3)
