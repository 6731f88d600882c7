"""What every MPI rank shares: tags, its context, heartbeats, and the finish handshake."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from dvla_hpc.config.schema import Config
from dvla_hpc.lanes.lane import Lane
from dvla_hpc.memory.heap import release_free_heap
from dvla_hpc.output.telemetry import Telemetry
from dvla_hpc.planes.control import ControlPlane, Kind, Message
from dvla_hpc.planes.data_pump import DataPump
from dvla_hpc.runtime.blueprint import Blueprint
from dvla_hpc.roles.watchdog import SilenceWatch, telemetry_every_s, watch_neighbours
from dvla_hpc.runtime.reports import heartbeat_message, rank_report, rank_status
from dvla_hpc.runtime.signals import StopRequest
from dvla_hpc.runtime.topology import Communicators, RolePlan

if TYPE_CHECKING:
    import torch

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
    device: "torch.device | None"  # None on sim ranks, which import no torch
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


class Pulse:
    """This rank's heartbeats and its watch over its neighbours in the watch tree (parent and
    children): a beat to each every HEARTBEAT_EVERY_S, telemetry to the root every
    `telemetry_every_s`, and RankSilent once a neighbour has been silent for the timeout. A beat
    carries the rank's telemetry and running totals, with the CPU of `lanes` (its lanes)."""

    def __init__(self, ctx: RankContext, lanes: list[Lane]):
        self.ctx = ctx
        self.lanes = lanes
        root = ctx.plan.learner_root
        self.neighbours = watch_neighbours(ctx.plan.world_size, root, ctx.rank)
        self.watch = SilenceWatch(self.neighbours, ctx.cfg.run.heartbeat_timeout_s,
                                  lambda rank: ctx.plan.name(rank, ctx.hosts))
        self.root = [] if ctx.rank == root or root in self.neighbours else [root]
        self.telemetry_every_s = telemetry_every_s(ctx.plan.world_size, HEARTBEAT_EVERY_S)
        self.next_beat = self.next_telemetry = 0.0

    def heard(self, messages: list[Message]) -> None:
        for msg in messages:
            self.watch.heard(msg.source)
        self.watch.check()

    def beat(self) -> None:
        """Send what is due (a heartbeat carries this rank's latest telemetry)."""
        now = time.monotonic()
        to = self.neighbours if now >= self.next_beat else []
        if self.root and now >= self.next_telemetry:
            to = to + self.root
            self.next_telemetry = now + self.telemetry_every_s
        if now >= self.next_beat:
            self.next_beat = now + HEARTBEAT_EVERY_S
        if to:
            message = heartbeat_message(self.ctx.rank, self.ctx.role, *rank_status(self.ctx.telemetry, self.lanes))
            for rank in to:
                self.ctx.control.post(rank, message)
            self.ctx.heartbeats_sent += 1
            release_free_heap()


def raise_if_failed(lanes: list[Lane], failed: threading.Event) -> None:
    if failed.is_set():
        broken = next((lane for lane in lanes if lane.error is not None), None)
        text = broken.error_text if broken else "(no traceback)"
        raise RuntimeError(f"lane {broken.name if broken else '?'} failed:\n{text}")


def follow_until_stop(ctx: RankContext, lanes: list[Lane],
                      hear: Callable[[Message], None] | None = None) -> None:
    """A rank other than the learner root: run until the root says STOP (handing every other
    message to `hear`), then join the lanes, send each lane's report and the rank's report, and
    say FINISHED. A neighbour silent for `run.heartbeat_timeout_s` ends the job (RankSilent)."""
    root = ctx.plan.learner_root
    pulse = Pulse(ctx, lanes)
    asked = False
    while True:
        raise_if_failed(lanes, ctx.failed)
        messages = ctx.control.poll()
        if any(m.kind == Kind.STOP for m in messages):
            break
        if hear is not None:
            for msg in messages:
                hear(msg)
        pulse.heard(messages)
        if ctx.pump.error is not None:
            raise ctx.pump.error
        if ctx.stop_request and not asked:
            ctx.control.post(root, Message(Kind.STOP_REQUEST, ctx.rank))
            asked = True
        pulse.beat()
        time.sleep(0.05)
    ctx.stop.set()
    for lane in lanes:
        lane.finish()
    raise_if_failed(lanes, ctx.failed)
    for lane in lanes:
        ctx.control.post(root, lane.report().to_message(ctx.rank))
    ctx.control.post(root, rank_report(ctx.telemetry, ctx.heartbeats_sent).to_message(ctx.rank, ctx.role))
    ctx.control.post(root, Message(Kind.FINISHED, ctx.rank, payload_size=len(lanes) + 1))
    ctx.pump.drain_and_stop(ctx.comms.data)
