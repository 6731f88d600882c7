"""The data plane's own cost: one observation slab out and one action slab back through the real
`DataPump`, with no lane work, between a "sim" rank 0 and an "infer" rank 1.

    mpiexec -n 2 python -m analysis.scaling_model.pump_probe OUT.json [--config C] [key=value ...]

Reports the round trip's wall time (MPI, the pumps' polling at the config's `poll_max_sleep_ms`,
queue hand-offs), each side's CPU seconds per round trip (every thread of the process), and the CPU
share of a rank whose pump polls with nothing to move."""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time

from mpi4py import MPI

from dvla_hpc.config.loader import load_config
from dvla_hpc.lanes.lane import SlotQueue
from dvla_hpc.memory.layouts import H, SlabKind, stamp
from dvla_hpc.memory.slab_pool import SlabPool
from dvla_hpc.planes.data_pump import DataPump
from dvla_hpc.runtime.blueprint import Blueprint

OBS_TAG, ACTION_TAG = 11, 12
SECONDS = 8.0
IDLE_SECONDS = 4.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--config", default="configs/wide.yaml")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    bp = Blueprint.from_config(cfg)
    rows = cfg.env.envs_per_sampler // 2
    world = MPI.COMM_WORLD.Dup()
    rank, peer = world.Get_rank(), 1 - world.Get_rank()
    obs_pool, action_pool = SlabPool(bp.obs_layout, 4), SlabPool(bp.action_layout, 4)
    inbox, outbox = SlotQueue(4, "in"), SlotQueue(4, "out")
    pump = DataPump(world, cfg.pipeline.poll_max_sleep_ms / 1000)
    if rank == 0:
        pump.send_from(outbox, obs_pool, OBS_TAG, lambda slot: peer)
        pump.receive_into(peer, ACTION_TAG, action_pool, inbox, SlabKind.ACTIONS, rows)
        out_pool, out_kind, in_pool = obs_pool, SlabKind.OBSERVATIONS, action_pool
    else:
        pump.send_from(outbox, action_pool, ACTION_TAG, lambda slot: peer)
        pump.receive_into(peer, OBS_TAG, obs_pool, inbox, SlabKind.OBSERVATIONS, rows)
        out_pool, out_kind, in_pool = action_pool, SlabKind.ACTIONS, obs_pool
    stop = threading.Event()

    def reply() -> None:
        slot = out_pool.acquire()
        header = out_pool.slots[slot]["header"]
        stamp(header, out_kind)
        header[H.COUNT] = rows
        outbox.put(slot, stop)

    pump.start()
    world.Barrier()
    if rank == 0:
        reply()
    trips, cpu0, t0 = 0, time.process_time(), time.perf_counter()
    deadline = t0 + SECONDS
    while True:
        slot = inbox.get(timeout=1.0)
        if slot is None:
            break  # rank 0 stopped sending: the end
        in_pool.release(slot)
        trips += 1
        if rank == 0 and time.perf_counter() > deadline:
            break
        reply()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    cpus = world.gather(cpu / trips, root=0)
    world.Barrier()
    # Idle: the pump polls with nothing to move while the main thread waits on its inbox, as a
    # rank's lanes wait for work.
    cpu0, t0 = time.process_time(), time.perf_counter()
    while time.perf_counter() - t0 < IDLE_SECONDS:
        inbox.get(timeout=0.05)
    idle = world.gather((time.process_time() - cpu0) / (time.perf_counter() - t0), root=0)
    pump.running.clear()
    if rank == 0:
        with open(args.out, "w") as out:
            json.dump({"round_trip_s": wall / trips, "sim_cpu_per_round_trip_s": cpus[0],
                       "infer_cpu_per_round_trip_s": cpus[1], "round_trips": trips,
                       "idle_cpu_share": max(idle), "rows_per_slab": rows,
                       "poll_max_sleep_s": cfg.pipeline.poll_max_sleep_ms / 1000}, out,
                      indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
