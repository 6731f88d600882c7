"""Per-process telemetry: CPU share and resident memory of this process and its descendants (env
worker subprocesses) via psutil, and utilisation and memory of the GPU it uses via NVML (pynvml).

A sample is a fixed set of plain numbers, so it packs into a fixed binary record (a heartbeat).
Sampling is cheap (no threads; a few /proc reads per process, a few NVML queries) and never
raises: a rank without an NVIDIA GPU, driver or NVML reports its GPU as "none" with the reason
and -1 in the GPU fields. RSS is summed over the processes, so pages that forked workers share
with their parent count once per process."""
from __future__ import annotations

import os
import time
from dataclasses import astuple, dataclass, fields
from typing import Any, ClassVar

import psutil

MIB = 2**20


@dataclass
class TelemetrySample:
    cpu_percent: float  # this process + descendants since the previous sample; 100 = one core
    rss_mib: float  # this process + descendants
    gpu_util_percent: float = -1.0  # -1: no GPU watched (or NVML cannot tell, e.g. a MIG slice)
    gpu_mem_used_mib: float = -1.0  # the whole device's used memory, as NVML reports it
    gpu_mem_total_mib: float = -1.0

    FIELDS: ClassVar[tuple[str, ...]] = ()

    def as_tuple(self) -> tuple[float, ...]:
        return astuple(self)

    @classmethod
    def from_tuple(cls, values) -> "TelemetrySample":
        values = tuple(float(v) for v in values)
        if len(values) != len(cls.FIELDS):
            raise ValueError(f"a telemetry sample has {len(cls.FIELDS)} values {cls.FIELDS}, "
                             f"got {len(values)}")
        return cls(*values)


TelemetrySample.FIELDS = tuple(f.name for f in fields(TelemetrySample))


def nvml_target(gpu_index: int, visible: str | None) -> int | str | None:
    """Which device NVML should watch for CUDA device `gpu_index`: an NVML index or a UUID (prefix),
    or None when it is not visible. NVML ignores CUDA_VISIBLE_DEVICES, so index i of that list
    names the device; as CUDA does, the list ends at its first entry that is neither."""
    if visible is None:
        return gpu_index
    entries: list[int | str] = []
    for entry in (e.strip() for e in visible.split(",")):
        if entry.isdigit():
            entries.append(int(entry))
        elif entry.startswith(("GPU-", "MIG-")):
            entries.append(entry)
        else:
            break
    return entries[gpu_index] if 0 <= gpu_index < len(entries) else None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _proc_children(pid: int) -> list[int]:
    """Direct children from /proc/<pid>/task/<tid>/children (each thread lists those it forked)."""
    kids: list[int] = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as file:
                kids.extend(int(k) for k in file.read().split())
        except OSError:  # the thread has exited
            pass
    return kids


class Telemetry:
    def __init__(self, gpu_index: int | None) -> None:
        """gpu_index: the CUDA device this process uses (as torch numbers it), or None to watch none.
        `gpu` is then NVML's name for it, or "none" with the reason in `gpu_note`. (CUDA numbers
        the devices fastest first unless CUDA_DEVICE_ORDER=PCI_BUS_ID, NVML by bus: on a node of
        mixed GPU models set that variable, or list UUIDs in CUDA_VISIBLE_DEVICES.)"""
        self._me = psutil.Process()
        pid = self._me.pid
        # walking /proc/<pid>/task/*/children reads a few files per process; psutil's fallback
        # reads the stat file of every process on the node
        self._fast_children = os.path.exists(f"/proc/{pid}/task/{pid}/children")
        self._procs: dict[int, psutil.Process] = {}
        self._nvml: Any = None
        self._handle: Any = None
        self.gpu = "none"
        self.gpu_note = self._watch(gpu_index)
        self._last_cpu, self._last_t = self._cpu_and_rss()[0], time.perf_counter()
        self._cpu_seconds = self._wall_seconds = 0.0
        self._samples = self._gpu_samples = 0
        self._rss_max = self._gpu_util_sum = 0.0
        self._gpu_mem_max = -1.0

    def _watch(self, gpu_index: int | None) -> str:
        """Open the GPU in NVML: "" when watched, else why not."""
        if gpu_index is None:
            return "no GPU watched"
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        target = nvml_target(gpu_index, visible)
        if target is None:
            return f"GPU {gpu_index} is not in CUDA_VISIBLE_DEVICES={visible!r}"
        try:
            import pynvml
            pynvml.nvmlInit()
        except Exception as exc:  # no package, no library, no driver, no device
            return f"no NVIDIA GPU: {exc or type(exc).__name__}"
        self._nvml = pynvml
        try:
            handle = (pynvml.nvmlDeviceGetHandleByIndex(target) if isinstance(target, int)
                      else self._handle_by_uuid(target))
            self.gpu = _text(pynvml.nvmlDeviceGetName(handle))
        except pynvml.NVMLError as exc:
            self.close()
            return f"NVML has no device {target!r}: {exc}"
        self._handle = handle
        return ""

    def _handle_by_uuid(self, uuid: str) -> Any:
        nvml = self._nvml
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            if _text(nvml.nvmlDeviceGetUUID(handle)).startswith(uuid):  # CUDA accepts a unique prefix
                return handle
        return nvml.nvmlDeviceGetHandleByUUID(uuid)  # a MIG slice, or raises NVMLError

    def _descendants(self) -> list[psutil.Process]:
        if not self._fast_children:
            return self._me.children(recursive=True)
        procs: dict[int, psutil.Process] = {}
        stack = [self._me.pid]
        while stack:
            try:
                kids = _proc_children(stack.pop())
            except OSError:  # exited while listed
                continue
            stack += kids
            for pid in kids:
                try:
                    procs[pid] = self._procs.get(pid) or psutil.Process(pid)
                except psutil.NoSuchProcess:
                    pass
        self._procs = procs
        return list(procs.values())

    def _cpu_and_rss(self) -> tuple[float, float]:
        """CPU seconds (user + system, with children already reaped) and resident bytes, summed over
        this process and its live descendants; a process that exits meanwhile is skipped."""
        cpu = rss = 0.0
        for proc in [self._me, *self._descendants()]:
            try:
                times = proc.cpu_times()
                cpu += times.user + times.system + times.children_user + times.children_system
                rss += proc.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return cpu, rss

    def _gpu(self) -> tuple[float, float, float]:
        """Utilisation %, used and total MiB of the watched GPU; -1 for what NVML cannot tell."""
        util = used = total = -1.0
        if self._handle is None:
            return util, used, total
        nvml = self._nvml
        try:
            util = float(nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)
        except nvml.NVMLError:  # not supported (a MIG slice) or the device went away
            pass
        try:
            memory = nvml.nvmlDeviceGetMemoryInfo(self._handle)
            used, total = round(memory.used / MIB, 1), round(memory.total / MIB, 1)
        except nvml.NVMLError:
            pass
        return util, used, total

    def sample(self) -> TelemetrySample:
        cpu, rss = self._cpu_and_rss()
        now = time.perf_counter()
        spent, wall = max(0.0, cpu - self._last_cpu), now - self._last_t
        self._last_cpu, self._last_t = cpu, now
        sample = TelemetrySample(round(100 * spent / wall, 1) if wall > 0 else 0.0,
                                 round(rss / MIB, 1), *self._gpu())
        self._samples += 1
        self._cpu_seconds += spent
        self._wall_seconds += wall
        self._rss_max = max(self._rss_max, sample.rss_mib)
        if sample.gpu_util_percent >= 0:
            self._gpu_samples += 1
            self._gpu_util_sum += sample.gpu_util_percent
        self._gpu_mem_max = max(self._gpu_mem_max, sample.gpu_mem_used_mib)
        return sample

    @property
    def cpu_seconds(self) -> float:
        """CPU seconds of the process and its descendants up to the last sample."""
        return self._cpu_seconds

    @property
    def wall_seconds(self) -> float:
        """Seconds from this object's creation to the last sample."""
        return self._wall_seconds

    def summary(self) -> dict:
        """Over the samples taken (one is taken now if there were none): the CPU share over the time
        they span, peak RSS, mean GPU utilisation and peak GPU memory (-1 without a GPU)."""
        if not self._samples:
            self.sample()
        return {"cpu_percent_mean": round(100 * self._cpu_seconds / self._wall_seconds, 1)
                if self._wall_seconds > 0 else 0.0,
                "rss_mib_max": self._rss_max,
                "gpu_util_percent_mean": round(self._gpu_util_sum / self._gpu_samples, 1)
                if self._gpu_samples else -1.0,
                "gpu_mem_used_mib_max": self._gpu_mem_max,
                "gpu": f"none ({self.gpu_note})" if self.gpu_note else self.gpu,
                "samples": self._samples}

    def close(self) -> None:
        """Let go of NVML (idempotent); later samples carry -1 in the GPU fields."""
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError:
                pass
        self._nvml = self._handle = None
