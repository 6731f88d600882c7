"""Parent-side handle on one VectorEnv worker process: spawn it, wait until it is ready, stop it."""
from __future__ import annotations

import select
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext
from multiprocessing.process import BaseProcess

import numpy as np
import psutil

from dvla_hpc.envs.vector_wire import REPLY_READY, Batch, WorkerConfig, pack_config, unpack_reply
from dvla_hpc.envs.vector_worker import worker_main


@dataclass
class WorkerHandle:
    index: int
    env_ids: np.ndarray
    process: BaseProcess
    conn: Connection
    pending: dict[int, Batch] = field(default_factory=dict)  # seq -> batch sent, not yet acknowledged
    completed_seq: int = 0  # seq of the newest acknowledged batch
    recovery_seq: int = 0  # seq of the batch that resets the envs a crash interrupted
    last_progress: float = 0.0  # when it last acknowledged, or was handed work while idle
    cpu_s: float = 0.0  # the process's CPU seconds at the last reading (`read_cpu`)

    def read_cpu(self) -> float:
        """The process's CPU seconds now, or at the last reading once it has been reaped."""
        self.cpu_s = max(self.cpu_s, cpu_seconds(self.process))
        return self.cpu_s


def spawn_worker(context: SpawnContext, block_path: str,
                 config: WorkerConfig) -> tuple[BaseProcess, Connection]:
    parent_conn, child_conn = context.Pipe(duplex=True)
    process = context.Process(target=worker_main, args=(child_conn, block_path),
                              name=f"vector-env-worker-{config.worker_index}", daemon=True)
    process.start()
    child_conn.close()
    parent_conn.send_bytes(pack_config(config))
    return process, parent_conn


def await_ready(workers: list[WorkerHandle], timeout_s: float) -> None:
    """Block until every worker has built its envs; raise naming the first that fails or is late."""
    deadline = time.monotonic() + timeout_s
    waiting = list(workers)
    while waiting:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RuntimeError(f"vector env workers {[w.index for w in waiting]} did not start "
                               f"within {timeout_s} s")
        ready = readable([w.conn for w in waiting] + [w.process.sentinel for w in waiting], timeout_s=remaining)
        for worker in list(waiting):
            if worker.conn in ready:
                try:
                    reply = unpack_reply(worker.conn.recv_bytes())
                except EOFError:
                    reply = None
                if reply is not None and reply.kind == REPLY_READY:
                    waiting.remove(worker)
                    continue
                detail = reply.message if reply is not None else "it closed its pipe"
                raise RuntimeError(f"vector env worker {worker.index} failed to start: {detail}")
            if not worker.process.is_alive():
                raise RuntimeError(f"vector env worker {worker.index} exited with code "
                                   f"{worker.process.exitcode} during startup")


def stop_worker(worker: WorkerHandle, grace_s: float) -> None:
    """Give the process grace_s to exit on its own, then kill it; reap it and close its pipe."""
    worker.process.join(grace_s)
    if worker.process.is_alive():
        worker.process.kill()
        worker.process.join()
    worker.conn.close()


def cpu_seconds(process: BaseProcess) -> float:
    """User and system CPU seconds of a worker process so far; 0 once it has been reaped."""
    try:
        times = psutil.Process(process.pid).cpu_times()
    except (psutil.Error, ValueError):  # gone, or never started (pid None)
        return 0.0
    return times.user + times.system


def readable(handles: list, timeout_s: float) -> list:
    """The handles (ints or objects with a fileno) that are readable, closed or in error within
    the timeout: `multiprocessing.connection.wait` in one poll(2), without building a selector
    each call (a sample lane waits tens of thousands of times a minute)."""
    poller = select.poll()
    by_fd = {}
    for handle in handles:
        fd = handle if isinstance(handle, int) else handle.fileno()
        by_fd[fd] = handle
        poller.register(fd, select.POLLIN)
    return [by_fd[fd] for fd, _ in poller.poll(timeout_s * 1000)]
