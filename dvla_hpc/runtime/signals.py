"""Ctrl-C / SIGTERM become a stop request (a second Ctrl-C stops at once); unhandled errors end
the whole MPI job, never hang it."""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback


class JobFault(RuntimeError):
    """An expected way for a job to fail (a rank hung or died): reported by its message alone."""


class StopRequest:
    def __init__(self):
        self.event = threading.Event()
        self.signal_name = ""

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, _frame) -> None:
        if self.event.is_set():
            if signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C means now
            return  # SLURM's SIGTERM comes twice (slurmstepd, then srun passing it on); its SIGKILL follows anyway
        self.signal_name = signal.Signals(signum).name
        self.event.set()

    def __bool__(self) -> bool:
        return self.event.is_set()


def abort_on_unhandled_error(comm) -> None:
    """Every rank: print the error with its rank, then Abort the world so no peer waits forever."""
    rank = comm.Get_rank()

    def report_and_abort(kind, value, tb, thread_name: str = "main") -> None:
        if isinstance(value, JobFault):
            report = f"\n[dvla_hpc rank {rank}] {type(value).__name__}: {value}\n"
        else:
            text = "".join(traceback.format_exception(kind, value, tb))
            report = f"\n[dvla_hpc rank {rank}, thread {thread_name}] unhandled error:\n{text}"
        os.write(2, report.encode())  # one write: Abort can cut off a report sent in pieces
        time.sleep(0.2)
        comm.Abort(1)

    sys.excepthook = report_and_abort
    threading.excepthook = lambda a: report_and_abort(
        a.exc_type, a.exc_value, a.exc_traceback, a.thread.name if a.thread else "?")
