"""Where the data path's memory comes from, and whether it stays put.

Every buffer that holds samples or weights (slab pools, the learner's training arena, weight
buffers, receive scratch) is requested here. Requests are expected while the run starts; once
the first update has been trained the process is `seal`ed, and any request after that is a
steady-state allocation on the data path, counted and named in the run summary (the target is 0).
Compute temporaries (activations, gradients) are not data-path buffers and are not counted; the
RSS track in the summary covers them. Host buffers are pinned on ranks that feed a GPU (pinning
raises without one); buffers placed on a GPU are counted apart, with torch's peak allocation.
Host byte buffers are numpy memory unless pinned, so ranks that never touch a tensor (sim ranks)
never import torch."""
from __future__ import annotations

import statistics
import sys
import threading
from typing import TYPE_CHECKING

import numpy as np
import psutil

from dvla_hpc.memory.heap import release_free_heap

if TYPE_CHECKING:
    import torch


class DataPathMemory:
    def __init__(self) -> None:
        self.pin = False
        self.bytes = 0
        self.device_bytes = 0
        self.buffers = 0
        self.sealed = False
        self.after_warmup: dict[str, int] = {}
        self._lock = threading.Lock()

    def configure(self, pin: bool) -> None:
        """Pin host buffers (a rank that copies them to a GPU); never on CPU-only ranks, where
        pinning raises and would create a CUDA context."""
        self.pin = pin

    def zeros(self, name: str, shape: tuple[int, ...], dtype: "torch.dtype",
              device: "torch.device | None" = None) -> "torch.Tensor":
        import torch
        on_device = device is not None and device.type != "cpu"
        buffer = torch.zeros(shape, dtype=dtype, device=device if on_device else None)
        if self.pin and not on_device:
            buffer = buffer.pin_memory()
        self._count(name, buffer.numel() * buffer.element_size(), on_device)
        return buffer

    def host_bytes(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """Zeroed uint8 host memory: numpy's, or a pinned tensor's (the array keeps it alive)."""
        if self.pin:
            import torch
            return self.zeros(name, shape, torch.uint8).numpy()
        buffer = np.zeros(shape, dtype=np.uint8)
        self._count(name, buffer.nbytes, on_device=False)
        return buffer

    def _count(self, name: str, nbytes: int, on_device: bool) -> None:
        with self._lock:
            if on_device:
                self.device_bytes += nbytes
            else:
                self.bytes += nbytes
            self.buffers += 1
            if self.sealed:
                self.after_warmup[name] = self.after_warmup.get(name, 0) + 1

    def seal(self) -> None:
        self.sealed = True

    def report(self) -> dict:
        return {"data_path_buffers": self.buffers, "data_path_mib": round(self.bytes / 2**20, 2),
                "device_data_path_mib": round(self.device_bytes / 2**20, 2),
                "device_peak_mib": device_peak_mib(),
                "pinned": self.pin, "allocations_after_warmup": sum(self.after_warmup.values()),
                "allocated_after_warmup_by": dict(self.after_warmup)}


def device_peak_mib() -> float:
    """torch's peak allocation on this process's GPU (its high-water mark); -1 without one."""
    torch = sys.modules.get("torch")  # a rank that never imported torch has no GPU memory
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return -1.0
    return round(torch.cuda.max_memory_allocated() / 2**20, 1)


DATA_PATH = DataPathMemory()


def trend_growth(values: list[float]) -> float:
    """Relative growth from the first quarter of a series to its last, by their medians: a trend
    that one noisy sample at either end cannot fake (the heap breathes by several % per minibatch)."""
    k = max(1, len(values) // 4)
    return statistics.median(values[-k:]) / statistics.median(values[:k]) - 1


class RssTrack:
    """Resident memory of this process, sampled by the caller (each sample first hands free heap
    pages back to the OS, so it reads what the process holds); growth measured from the warm-up mark."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.samples: list[tuple[float, float]] = []  # (seconds, MiB)
        self.warm_index: int | None = None

    def sample(self, t: float) -> float:
        release_free_heap()
        mib = self.process.memory_info().rss / 2**20
        self.samples.append((round(t, 2), round(mib, 1)))
        return mib

    def mark_warm(self) -> None:
        """Growth is measured from the latest sample on."""
        self.warm_index = len(self.samples) - 1

    def report(self) -> dict:
        if not self.samples:
            return {}
        after = self.samples[self.warm_index:] if self.warm_index is not None else []
        out = {"rss_mib_end": self.samples[-1][1], "rss_mib_max": max(m for _, m in self.samples)}
        if len(after) >= 2:
            out["rss_warm_t"] = after[0][0]
            out["rss_mib_at_warmup"] = after[0][1]
            out["rss_growth_after_warmup"] = round(trend_growth([m for _, m in after]), 4)
        timeline = self.samples[:: max(1, len(self.samples) // 60)]
        if timeline[-1] is not self.samples[-1]:
            timeline.append(self.samples[-1])
        out["rss_mib_timeline"] = timeline
        return out
