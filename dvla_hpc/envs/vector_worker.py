"""Entry point of a VectorEnv worker process: builds its envs, then runs batches until told to stop."""
from __future__ import annotations

import os
import signal
import traceback
from multiprocessing.connection import Connection

from dvla_hpc.envs.registry import env_spec, make_env
from dvla_hpc.envs.vector_buffers import EnvBuffers, map_shared_block
from dvla_hpc.envs.vector_runner import EnvRunner, EnvStepError
from dvla_hpc.envs.vector_wire import (
    REPLY_DONE, REPLY_ERROR, REPLY_READY, REQUEST_SHUTDOWN, pack_reply, request_kind, unpack_batch,
    unpack_config,
)


# A scheduler's SIGTERM reaches every process of a job step, workers too; their rank stops them as it
# stops itself. A worker that left at once would be restarted for nothing, and the scheduler's second
# SIGTERM could kill it mid-recovery. It leaves on its own only if its rank has not stopped it by then.
SIGTERM_GRACE_S = 15


def outlast_sigterm(_signum, _frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.alarm(SIGTERM_GRACE_S)


def worker_main(conn: Connection, block_path: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when workers stop
    signal.signal(signal.SIGTERM, outlast_sigterm)
    buffers: EnvBuffers | None = None
    runner: EnvRunner | None = None
    try:
        try:
            config = unpack_config(conn.recv_bytes())
            if config.nice:
                os.nice(config.nice)
            spec = env_spec(config.env_name, **config.env_kwargs)
            block = map_shared_block(block_path, EnvBuffers.nbytes(spec, config.num_envs))
            buffers = EnvBuffers.over(block, spec, config.num_envs)
            runner = EnvRunner({}, buffers, config.worker_index)
            for env_id in config.env_ids:
                runner.add_env(env_id, make_env(config.env_name, **config.env_kwargs))
        except Exception:
            conn.send_bytes(pack_reply(REPLY_ERROR, 0, -1, traceback.format_exc()))
            return
        conn.send_bytes(pack_reply(REPLY_READY, 0))
        _serve(conn, runner)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the parent is gone or killed us mid-reply; nothing is left to report to
    finally:
        if runner is not None:
            runner.close()
        if buffers is not None:
            buffers.release()


def _serve(conn: Connection, runner: EnvRunner) -> None:
    while True:
        message = conn.recv_bytes()
        if request_kind(message) == REQUEST_SHUTDOWN:
            return
        batch = unpack_batch(message)
        try:
            runner.run(batch.env_ids, batch.ops, batch.seeds, batch.actions)
        except EnvStepError as exc:
            cause = exc.__cause__
            trace = "".join(traceback.format_exception(cause)) if cause is not None else ""
            conn.send_bytes(pack_reply(REPLY_ERROR, batch.seq, exc.env_id, f"{exc.detail}\n{trace}"))
        else:
            conn.send_bytes(pack_reply(REPLY_DONE, batch.seq))
