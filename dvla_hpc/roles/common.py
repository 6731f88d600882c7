"""What every MPI rank shares: tags, its context, heartbeats, and the finish handshake."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

from dvla_hpc.config.schema import Config
from dvla_hpc.lanes.lane import Lane
from dvla_hpc.memory.heap import release_free_heap
from dvla_hpc.output.telemetry import Telemetry
from dvla_hpc.planes.control import ControlPlane, Kind, Message
from dvla_hpc.planes.data_pump import DataPump
from dvla_hpc.runtime.blueprint import Blueprint
from dvla_hpc.roles.watchdog import SilenceWatch
from dvla_hpc.runtime.reports import heartbeat_message, rank_report
from dvla_hpc.runtime.signals import StopRequest
from dvla_hpc.runtime.topology import Communicators, RolePlan

OBS_TAG, ACTION_TAG, EPISODE_TAG = 11, 12, 13
HEARTBEAT_EVERY_S = 2.0


@dataclass
class RankContext:
    cfg: Config
    bp: Blueprint
    plan: RolePlan
    comms: Communicators
    control: ControlPlane
    pump: DataPump
    stop_request: StopRequest
    device: "torch.device"
    data_backend: str  # "mpi" or "torch": what carries episodes and weights between infer and learner ranks
    torch_plane: object | None  # a planes.torch_plane.TorchPlane on infer and learner ranks (torch backend)
    telemetry: Telemetry
    devices: dict[str, str]  # per role, the devices its ranks compute on
    hosts: tuple[str, ...]  # every world rank's host name
    stop: threading.Event
    failed: threading.Event
    heartbeats_sent: int = 0

    @property
    def rank(self) -> int:
        return self.comms.world.Get_rank()

    @property
    def role(self) -> str:
        return self.plan.roles[self.rank]

    def watch(self, ranks: list[int]) -> SilenceWatch:
        return SilenceWatch(ranks, self.cfg.run.heartbeat_timeout_s,
                            lambda rank: self.plan.name(rank, self.hosts))

    def beat(self, to: list[int]) -> None:
        """One heartbeat (this rank's latest telemetry) to each of `to`."""
        message = heartbeat_message(self.rank, self.role, self.telemetry.sample())
        for rank in to:
            self.control.post(rank, message)
        self.heartbeats_sent += 1


def raise_if_failed(lanes: list[Lane], failed: threading.Event) -> None:
    if failed.is_set():
        broken = next((lane for lane in lanes if lane.error is not None), None)
        text = broken.error_text if broken else "(no traceback)"
        raise RuntimeError(f"lane {broken.name if broken else '?'} failed:\n{text}")


def follow_until_stop(ctx: RankContext, lanes: list[Lane],
                      hear: Callable[[Message], None] | None = None) -> None:
    """A rank other than the learner root: run until the root says STOP (handing every other
    message to `hear`), then join the lanes, send each lane's report and the rank's report, and
    say FINISHED. A root silent for `run.heartbeat_timeout_s` ends the job (RankSilent)."""
    root = ctx.plan.learner_root
    root_watch = ctx.watch([root])
    next_beat = 0.0
    asked = False
    while True:
        raise_if_failed(lanes, ctx.failed)
        messages = ctx.control.poll()
        if any(m.kind == Kind.STOP for m in messages):
            break
        for msg in messages:
            root_watch.heard(msg.source)
            if hear is not None:
                hear(msg)
        root_watch.check()
        if ctx.pump.error is not None:
            raise ctx.pump.error
        now = time.monotonic()
        if ctx.stop_request and not asked:
            ctx.control.post(root, Message(Kind.STOP_REQUEST, ctx.rank))
            asked = True
        if now >= next_beat:
            ctx.beat([root])
            release_free_heap()
            next_beat = now + HEARTBEAT_EVERY_S
        time.sleep(0.02)
    ctx.stop.set()
    for lane in lanes:
        lane.join(timeout=30)
    raise_if_failed(lanes, ctx.failed)
    for lane in lanes:
        ctx.control.post(root, lane.report().to_message(ctx.rank))
    ctx.control.post(root, rank_report(ctx.telemetry, ctx.heartbeats_sent).to_message(ctx.rank, ctx.role))
    ctx.control.post(root, Message(Kind.FINISHED, ctx.rank, payload_size=len(lanes) + 1))
    ctx.pump.drain_and_stop(ctx.comms.data)
