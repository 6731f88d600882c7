"""Named reports that cross process boundaries: a lane's shares and counters, a rank's telemetry
and running CPU totals.

Each report is a record with named fields and one fixed layout, encoded into a control-plane
message here and decoded here; no other module reads message values by position."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING

from dvla_hpc.memory.accounting import DATA_PATH
from dvla_hpc.output.telemetry import Telemetry, TelemetrySample
from dvla_hpc.planes.control import VALUES, Kind, Message

if TYPE_CHECKING:
    from dvla_hpc.lanes.lane import Lane

SHARES = ("busy", "waiting", "items", "seconds", "copy", "poll", "cpu_seconds")
LANES = ("sample", "infer", "learn", "distribute", "record")
LANE_COUNTERS: dict[str, tuple[str, ...]] = {
    "sample": ("env_steps", "worker_restarts", "parked_halves", "worker_cpu_ms"),
    "infer": ("weight_swaps", "episodes", "observations", "policy_calls"),
    "learn": ("checkpoints", "checkpoint_ms"),  # periodic ones; the final one is not a lane's
    "distribute": ("versions",),
    "record": ("written",),
}
assert all(len(SHARES) + len(c) <= VALUES for c in LANE_COUNTERS.values())


@dataclass
class LaneReport:
    lane: str
    busy: float
    waiting: float
    items: int
    seconds: float
    counters: dict[str, float] = field(default_factory=dict)
    copy: float = 0.0  # share of the lane's time moving bytes (part of busy)
    poll: float = 0.0  # share sleeping between polls (part of waiting)
    cpu_seconds: float = 0.0  # the lane thread's own CPU time (the sample lane's env workers: a counter)

    def breakdown(self) -> dict[str, float]:
        """Where the lane's time went; the four shares sum to 1."""
        return {"compute": round(self.busy - self.copy, 4), "copy": self.copy,
                "wait": round(self.waiting - self.poll, 4), "poll": self.poll}

    def to_message(self, rank: int) -> Message:
        names = LANE_COUNTERS[self.lane]
        if set(self.counters) != set(names):
            raise ValueError(f"lane {self.lane} reports counters {sorted(self.counters)}, "
                             f"its layout has {list(names)}")
        values = (self.busy, self.waiting, float(self.items), self.seconds, self.copy, self.poll,
                  self.cpu_seconds, *(float(self.counters[n]) for n in names))
        return Message(Kind.LANE_REPORT, rank, topic=LANES.index(self.lane), values=values)

    @classmethod
    def from_message(cls, msg: Message) -> "LaneReport":
        if msg.kind != Kind.LANE_REPORT or not 0 <= msg.topic < len(LANES):
            raise ValueError(f"rank {msg.source}: not a lane report ({msg.kind.name}, topic {msg.topic})")
        lane = LANES[msg.topic]
        busy, waiting, items, seconds, copy, poll, cpu_seconds, *rest = msg.values
        counters = dict(zip(LANE_COUNTERS[lane], rest))
        return cls(lane, busy, waiting, int(items), seconds, counters, copy=copy, poll=poll, cpu_seconds=cpu_seconds)


@dataclass
class RankReport:
    """One rank's resources at the end of the run (telemetry and data-path accounting)."""
    cpu_percent_mean: float = 0.0
    rss_mib_max: float = 0.0
    gpu_util_percent_mean: float = -1.0  # -1: no GPU watched on this rank
    gpu_mem_used_mib_max: float = -1.0
    data_path_mib: float = 0.0
    device_mib: float = 0.0  # data-path buffers on the accelerator
    device_peak_mib: float = -1.0  # torch's peak allocation on the accelerator; -1 without one
    allocations_after_warmup: int = 0
    heartbeats_sent: int = 0

    def to_message(self, rank: int, role: str) -> Message:
        values = tuple(float(getattr(self, f.name)) for f in fields(self))
        return Message(Kind.RANK_REPORT, rank, topic=ROLE_IDS[role], values=values)

    @classmethod
    def from_message(cls, msg: Message) -> tuple[str, "RankReport"]:
        if msg.kind != Kind.RANK_REPORT or msg.topic not in ROLE_NAMES:
            raise ValueError(f"rank {msg.source}: not a rank report ({msg.kind.name}, topic {msg.topic})")
        kinds = [f.type for f in fields(cls)]
        values = [int(v) if kind in (int, "int") else v for v, kind in zip(msg.values, kinds)]
        return ROLE_NAMES[msg.topic], cls(*values)


ROLE_IDS = {"sim": 0, "infer": 1, "learn": 2, "local": 3}
ROLE_NAMES = {v: k for k, v in ROLE_IDS.items()}
assert len(fields(RankReport)) <= VALUES


def merge_lane_reports(reports: list[LaneReport]) -> dict:
    """Per lane over the ranks that run it: mean busy and waiting shares and their breakdown into
    compute, copy, wait and poll; summed items, CPU seconds and counters."""
    merged: dict[str, dict] = {}
    for name in LANES:
        mine = [r for r in reports if r.lane == name]
        if not mine:
            continue
        n = len(mine)
        merged[name] = {"busy": round(sum(r.busy for r in mine) / n, 4),
                        "waiting": round(sum(r.waiting for r in mine) / n, 4),
                        "breakdown": {part: round(sum(r.breakdown()[part] for r in mine) / n, 4)
                                      for part in ("compute", "copy", "wait", "poll")},
                        "items": sum(r.items for r in mine), "ranks": n,
                        "cpu_seconds": round(sum(r.cpu_seconds for r in mine), 3),
                        **{c: int(sum(r.counters[c] for r in mine)) for c in LANE_COUNTERS[name]}}
    return merged


def rank_report(telemetry: Telemetry, heartbeats_sent: int) -> RankReport:
    """This process's report, from its telemetry (output/telemetry.py) and data-path accounting."""
    seen = telemetry.summary()
    path = DATA_PATH.report()
    return RankReport(cpu_percent_mean=seen["cpu_percent_mean"], rss_mib_max=seen["rss_mib_max"],
                      gpu_util_percent_mean=seen["gpu_util_percent_mean"],
                      gpu_mem_used_mib_max=seen["gpu_mem_used_mib_max"],
                      data_path_mib=path["data_path_mib"], device_mib=path["device_data_path_mib"],
                      device_peak_mib=path["device_peak_mib"],
                      allocations_after_warmup=path["allocations_after_warmup"],
                      heartbeats_sent=heartbeats_sent)


@dataclass
class RankClock:
    """A rank's running totals as of one telemetry sample: wall and CPU seconds since its telemetry
    began (the process with its env workers), and its lanes' CPU seconds (their threads, and the
    sample lane's env workers). Two clocks of one rank give its CPU between them, all of it and the
    lanes' part; the rest is its data pump, control plane and main thread."""
    seconds: float
    cpu_seconds: float
    lanes_cpu_seconds: float


assert len(TelemetrySample.FIELDS) + len(fields(RankClock)) <= VALUES


def lanes_cpu_seconds(reports: list[LaneReport]) -> float:
    """CPU seconds of the lanes' threads, with the sample lane's env workers."""
    return sum(r.cpu_seconds + r.counters.get("worker_cpu_ms", 0) / 1e3 for r in reports)


def rank_status(telemetry: Telemetry, lanes: list[Lane]) -> tuple[TelemetrySample, RankClock]:
    """A telemetry sample now, and the running totals it closes."""
    sample = telemetry.sample()
    clock = RankClock(round(telemetry.wall_seconds, 3), round(telemetry.cpu_seconds, 3),
                      round(lanes_cpu_seconds([lane.report() for lane in lanes]), 3))
    return sample, clock


def status_record(role: str, sample: TelemetrySample, clock: RankClock) -> dict:
    """One rank's entry in a "lanes" metrics record."""
    return {"role": role, **asdict(sample), **asdict(clock)}


def heartbeat_message(rank: int, role: str, sample: TelemetrySample, clock: RankClock) -> Message:
    """A sign of life that carries the rank's latest telemetry and running totals."""
    return Message(Kind.HEARTBEAT, rank, topic=ROLE_IDS[role], values=(*sample.as_tuple(), *asdict(clock).values()))


def heartbeat_status(msg: Message) -> dict:
    """The heartbeat's rank as `status_record` lays it out."""
    n = len(TelemetrySample.FIELDS)
    clock = RankClock(*(float(v) for v in msg.values[n:n + len(fields(RankClock))]))
    return status_record(ROLE_NAMES[msg.topic], TelemetrySample.from_tuple(msg.values[:n]), clock)
