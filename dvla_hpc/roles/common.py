"""What every MPI rank shares: tags, the control loop, heartbeats and the finish handshake."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

from dvla_hpc.config.schema import Config
from dvla_hpc.lanes.lane import Lane
from dvla_hpc.memory.heap import release_free_heap
from dvla_hpc.planes.control import ControlPlane, Kind, Message
from dvla_hpc.planes.data_pump import DataPump
from dvla_hpc.runtime.blueprint import Blueprint
from dvla_hpc.runtime.signals import StopRequest
from dvla_hpc.runtime.topology import Communicators, RolePlan

OBS_TAG, ACTION_TAG, EPISODE_TAG = 11, 12, 13
HEARTBEAT_EVERY_S = 2.0
LANE_IDS = {"sample": 0, "infer": 1, "learn": 2, "distribute": 3, "record": 4}
LANE_NAMES = {v: k for k, v in LANE_IDS.items()}


@dataclass
class RankContext:
    cfg: Config
    bp: Blueprint
    plan: RolePlan
    comms: Communicators
    control: ControlPlane
    pump: DataPump
    stop_request: StopRequest
    stop: threading.Event
    failed: threading.Event

    @property
    def rank(self) -> int:
        return self.comms.world.Get_rank()


def raise_if_failed(lanes: list[Lane], failed: threading.Event) -> None:
    if failed.is_set():
        broken = next((lane for lane in lanes if lane.error is not None), None)
        text = broken.error_text if broken else "(no traceback)"
        raise RuntimeError(f"lane {broken.name if broken else '?'} failed:\n{text}")


def lane_message(rank: int, lane: Lane, extra: tuple[float, ...] = ()) -> Message:
    s = lane.shares()
    return Message(Kind.METRICS, rank, topic=LANE_IDS[lane.name],
                   values=(s["busy"], s["waiting"], s["items"], s["seconds"], *extra))


def follow_until_stop(ctx: RankContext, lanes: list[Lane],
                      extra: dict[str, Callable[[], tuple[float, ...]]]) -> None:
    """A sim or infer rank: run until the learner says STOP, then join lanes and report."""
    learner = ctx.plan.learner_root
    next_beat = 0.0
    asked = False
    while True:
        raise_if_failed(lanes, ctx.failed)
        if any(m.kind == Kind.STOP for m in ctx.control.poll()):
            break
        if ctx.pump.error is not None:
            raise ctx.pump.error
        now = time.monotonic()
        if ctx.stop_request and not asked:
            ctx.control.post(learner, Message(Kind.STOP_REQUEST, ctx.rank))
            asked = True
        if now >= next_beat:
            ctx.control.post(learner, Message(Kind.HEARTBEAT, ctx.rank))
            release_free_heap()
            next_beat = now + HEARTBEAT_EVERY_S
        time.sleep(0.02)
    ctx.stop.set()
    for lane in lanes:
        lane.join(timeout=30)
    raise_if_failed(lanes, ctx.failed)
    for lane in lanes:
        values = extra[lane.name]() if lane.name in extra else ()
        ctx.control.post(learner, lane_message(ctx.rank, lane, values))
    ctx.control.post(learner, Message(Kind.FINISHED, ctx.rank, payload_size=len(lanes)))
    ctx.pump.drain_and_stop(ctx.comms.data)
