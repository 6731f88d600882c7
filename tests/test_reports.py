"""Named reports survive the control plane's binary encoding, and the summary merges them by name."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from dvla_hpc.lanes.lane import Lane
from dvla_hpc.planes.control import MESSAGE, decode, encode
from dvla_hpc.runtime.reports import LANE_COUNTERS, LaneReport, RankReport, merge_lane_reports


def through_the_wire(msg):
    buf = np.zeros(1, dtype=MESSAGE)
    encode(msg, buf)
    return decode(buf, origin=msg.source)


@pytest.mark.parametrize("lane", sorted(LANE_COUNTERS))
def test_every_lane_report_round_trips_by_name(lane):
    counters = {name: float(i + 7) for i, name in enumerate(LANE_COUNTERS[lane])}
    report = LaneReport(lane, 0.25, 0.75, 12, 3.5, counters, copy=0.125, poll=0.5, cpu_seconds=2.625)
    assert LaneReport.from_message(through_the_wire(report.to_message(rank=5))) == report


def test_a_lane_report_with_counters_its_layout_lacks_is_refused():
    with pytest.raises(ValueError, match="sample reports counters"):
        LaneReport("sample", 0.5, 0.5, 1, 1.0, {"env_steps": 3.0}).to_message(0)


def test_rank_report_round_trips_with_its_role():
    report = RankReport(cpu_percent_mean=87.5, rss_mib_max=512.0, gpu_util_percent_mean=-1.0,
                        gpu_mem_used_mib_max=-1.0, data_path_mib=37.7, device_mib=0.0,
                        device_peak_mib=-1.0, allocations_after_warmup=2, heartbeats_sent=9)
    role, back = RankReport.from_message(through_the_wire(report.to_message(3, "infer")))
    assert role == "infer" and back == report and isinstance(back.allocations_after_warmup, int)


def test_merge_averages_shares_and_sums_counters_per_lane():
    reports = [LaneReport("sample", 0.2, 0.8, 10, 5.0,
                          {"env_steps": 100, "worker_restarts": 1, "parked_halves": 2, "worker_cpu_ms": 900},
                          copy=0.1, cpu_seconds=0.25),
               LaneReport("sample", 0.4, 0.6, 30, 5.0,
                          {"env_steps": 300, "worker_restarts": 0, "parked_halves": 0, "worker_cpu_ms": 2100},
                          poll=0.2, cpu_seconds=0.5),
               LaneReport("learn", 0.9, 0.1, 4, 5.0, {"checkpoints": 2, "checkpoint_ms": 140})]
    merged = merge_lane_reports(reports)
    assert merged["sample"] == {"busy": 0.3, "waiting": 0.7, "items": 40, "ranks": 2,
                                "breakdown": {"compute": 0.25, "copy": 0.05, "wait": 0.6, "poll": 0.1},
                                "env_steps": 400, "worker_restarts": 1, "parked_halves": 2,
                                "cpu_seconds": 0.75, "worker_cpu_ms": 3000}
    assert merged["learn"]["ranks"] == 1 and merged["learn"]["checkpoints"] == 2 and "infer" not in merged


def test_a_lanes_breakdown_splits_busy_into_compute_and_copy_and_waiting_into_wait_and_poll():
    class Timed(Lane):
        def loop(self):
            with self.copying():
                time.sleep(0.05)
            time.sleep(0.05)  # compute
            with self.polling():
                time.sleep(0.1)
            with self.waiting():
                time.sleep(0.05)

    lane = Timed("learn", threading.Event(), threading.Event())
    lane.start()
    lane.join()
    parts = lane.report().breakdown()
    assert sum(parts.values()) == pytest.approx(1.0, abs=2e-3)
    assert parts["poll"] > parts["copy"] > 0 and parts["wait"] > 0 and parts["compute"] > 0
    assert parts["poll"] == pytest.approx(0.4, abs=0.1) and parts["copy"] == pytest.approx(0.2, abs=0.1)


def spin(seconds: float) -> None:
    """Work this thread's CPU for `seconds`."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


class Spin(Lane):
    """A lane that works `spin_s` of CPU, then sleeps `sleep_s`."""

    def __init__(self, spin_s: float, sleep_s: float = 0.0):
        super().__init__("learn", threading.Event(), threading.Event())
        self.spin_s, self.sleep_s = spin_s, sleep_s

    def loop(self):
        spin(self.spin_s)
        time.sleep(self.sleep_s)


def test_a_lanes_cpu_seconds_count_its_own_threads_work_and_not_its_sleep_or_other_threads():
    lane = Spin(0.2, sleep_s=0.3)
    assert lane.cpu_seconds() == 0.0  # not started
    lane.start()
    spin(0.4)  # this thread works meanwhile: not the lane's CPU
    lane.join()
    cpu = lane.report().cpu_seconds
    assert 0.19 <= cpu < 0.3
    assert lane.cpu_seconds() == pytest.approx(cpu, abs=1e-4)  # kept once the thread has ended


def test_a_heartbeat_carries_the_ranks_role_telemetry_and_running_totals():
    from dvla_hpc.output.telemetry import TelemetrySample
    from dvla_hpc.runtime.reports import RankClock, heartbeat_message, heartbeat_status

    sample, clock = TelemetrySample(150.5, 700.25), RankClock(12.5, 9.75, 8.5)
    status = heartbeat_status(through_the_wire(heartbeat_message(2, "sim", sample, clock)))
    assert status == {"role": "sim", "cpu_percent": 150.5, "rss_mib": 700.25, "gpu_util_percent": -1.0,
                      "gpu_mem_used_mib": -1.0, "gpu_mem_total_mib": -1.0,
                      "seconds": 12.5, "cpu_seconds": 9.75, "lanes_cpu_seconds": 8.5}


def test_rank_status_splits_the_process_cpu_into_its_lanes_and_the_rest():
    from dvla_hpc.output.telemetry import Telemetry
    from dvla_hpc.runtime.reports import rank_status

    telemetry = Telemetry(None)
    lane = Spin(0.3)
    lane.start()
    spin(0.2)  # this thread's own work: the process's, not the lane's
    lane.join()
    _, clock = rank_status(telemetry, [lane])
    assert 0.29 <= clock.lanes_cpu_seconds < 0.4
    assert clock.cpu_seconds >= clock.lanes_cpu_seconds + 0.19
    assert clock.seconds > 0
    time.sleep(0.01)
    _, later = rank_status(telemetry, [lane])
    assert later.seconds > clock.seconds and later.lanes_cpu_seconds == clock.lanes_cpu_seconds
