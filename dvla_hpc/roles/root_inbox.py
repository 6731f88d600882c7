"""What the learner root hears from the other ranks: heartbeats (with telemetry and running CPU
totals), lane and rank reports, and the FINISHED handshake at the end of the run."""
from __future__ import annotations

import time
from collections import defaultdict

from dvla_hpc.planes.backoff import Backoff
from dvla_hpc.planes.control import ControlPlane, Kind, Message
from dvla_hpc.runtime.reports import LaneReport, RankReport, heartbeat_status
from dvla_hpc.runtime.topology import RolePlan

FINISH_TIMEOUT_S = 60.0


class RootInbox:
    def __init__(self, plan: RolePlan, root: int):
        self.plan = plan
        self.others = [r for r in range(plan.world_size) if r != root]
        self.lanes: dict[int, list[LaneReport]] = defaultdict(list)
        self.ranks: dict[int, tuple[str, RankReport]] = {}
        self.finished: dict[int, int] = {}
        self.beats: dict[int, int] = defaultdict(int)
        self.last_beat: dict[int, float] = {}
        self.max_silence_s = 0.0
        self.telemetry: dict[int, dict] = {}

    def absorb(self, msg: Message) -> None:
        if msg.kind == Kind.HEARTBEAT:
            now = time.monotonic()
            if msg.source in self.last_beat:
                self.max_silence_s = max(self.max_silence_s, now - self.last_beat[msg.source])
            self.last_beat[msg.source] = now
            self.beats[msg.source] += 1
            self.telemetry[msg.source] = heartbeat_status(msg)
        elif msg.kind == Kind.LANE_REPORT:
            self.lanes[msg.source].append(LaneReport.from_message(msg))
        elif msg.kind == Kind.RANK_REPORT:
            self.ranks[msg.source] = RankReport.from_message(msg)
        elif msg.kind == Kind.FINISHED:
            self.finished[msg.source] = msg.payload_size

    def reported(self, rank: int) -> bool:
        return rank in self.finished and len(self.lanes[rank]) + (rank in self.ranks) >= self.finished[rank]

    def gather_finished(self, control: ControlPlane, timeout_s: float = FINISH_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        backoff = Backoff(10e-3)
        while not all(self.reported(r) for r in self.others):
            if time.monotonic() > deadline:
                missing = [r for r in self.others if not self.reported(r)]
                raise TimeoutError(f"ranks {missing} did not finish within {timeout_s:.0f}s of STOP")
            messages = control.poll()
            for msg in messages:
                self.absorb(msg)
            backoff.reset() if messages else backoff.idle()

    def lane_reports(self) -> list[LaneReport]:
        return [report for reports in self.lanes.values() for report in reports]

    def rank_reports(self) -> list[tuple[str, RankReport]]:
        return [self.ranks[r] for r in sorted(self.ranks)]

    def latest_telemetry(self) -> dict:
        return {str(rank): values for rank, values in sorted(self.telemetry.items())}

    def heartbeat_summary(self, control: ControlPlane, seconds: float) -> dict:
        """Heartbeats counted, the longest gap between two of one rank's, and the root's control
        traffic per second (the watch tree and the telemetry period keep it flat as ranks grow)."""
        return {"received": sum(self.beats.values()), "ranks": len(self.beats),
                "max_silence_s": round(self.max_silence_s, 2),
                "root_control_received_per_s": round(control.received / max(seconds, 1e-9), 2),
                "root_control_sent_per_s": round(control.sent / max(seconds, 1e-9), 2)}
