"""Static pool: a model's parameters as views into one flat buffer; holders keep active + staging."""
from __future__ import annotations

import threading
from typing import Callable

import torch
from torch import nn

from dvla_hpc.memory.accounting import DATA_PATH


def flatten_parameters(model: nn.Module) -> torch.Tensor:
    """Re-point every parameter at a slice of one contiguous float32 buffer and return that buffer."""
    params = list(model.parameters())
    if any(p.dtype != torch.float32 for p in params):
        raise TypeError("flatten_parameters expects float32 parameters")
    device = params[0].device
    if any(p.device != device for p in params):
        raise ValueError("flatten_parameters expects every parameter on one device")
    total = sum(p.numel() for p in params)
    flat = DATA_PATH.zeros("weights", (total,), torch.float32, device)
    offset = 0
    for p in params:
        n = p.numel()
        view = flat[offset: offset + n].view_as(p)
        view.copy_(p.data)
        p.data = view
        offset += n
    return flat


def flatten_gradients(model: nn.Module, flat: torch.Tensor) -> torch.Tensor:
    """Give every parameter a `.grad` that is a view into one buffer shaped like `flat` (the
    parameters must already be views of `flat`, in order): backward accumulates into it in place,
    so data-parallel learners allreduce one contiguous buffer."""
    grad = DATA_PATH.zeros("gradients", tuple(flat.shape), flat.dtype, flat.device)
    offset = 0
    for p in model.parameters():
        n = p.numel()
        p.grad = grad[offset: offset + n].view_as(p)
        offset += n
    return grad


class DoubleBufferedWeights:
    """Two model copies over two flat buffers on `device`. The distributor fills the staging copy;
    the inference lane swaps to it between batches (a pointer swap, never a copy on its path).

    On a GPU the filling and the reading run on different streams (the distributor's thread on its
    current stream, the inference lane on its own), so each hand-over is an event: `mark_staged`
    records one on the filler's stream that the swapper's stream waits for, so no kernel reads a
    version before its bytes have landed; `swap_if_staged` records one on the swapper's stream that
    the filler's stream waits for in `staging_buffer`, so no version overwrites a buffer that
    kernels queued before the swap still read."""

    def __init__(self, make_model: Callable[[], nn.Module], initial_version: int = 0,
                 device: torch.device = torch.device("cpu")):
        self.device = device
        self.models = [make_model().to(device).eval(), make_model().to(device).eval()]
        for m in self.models:
            m.requires_grad_(False)
        self.buffers = [flatten_parameters(m) for m in self.models]
        self.versions = [initial_version, -1]
        self.active = 0
        self._staged = False
        on_gpu = device.type == "cuda"
        self._landed = torch.cuda.Event() if on_gpu else None
        self._released = torch.cuda.Event() if on_gpu else None
        self._cond = threading.Condition()

    @property
    def nbytes(self) -> int:
        return self.buffers[0].numel() * 4

    def active_model(self) -> tuple[nn.Module, int]:
        return self.models[self.active], self.versions[self.active]

    def load_initial(self, flat: torch.Tensor, version: int) -> None:
        for buf in self.buffers:
            buf.copy_(flat)
        self.versions = [version, version]
        if self._landed is not None:  # once, before any lane runs: readers on other streams see it
            torch.cuda.synchronize(self.device)

    def staging_buffer(self, timeout: float) -> torch.Tensor | None:
        """The inactive buffer once the previous staged version has been swapped in; None on timeout."""
        with self._cond:
            if not self._cond.wait_for(lambda: not self._staged, timeout):
                return None
            if self._released is not None:
                torch.cuda.current_stream(self.device).wait_event(self._released)
            return self.buffers[1 - self.active]

    def mark_staged(self, version: int) -> None:
        """The staging buffer holds `version` once the work queued so far on the caller's current
        stream has run."""
        with self._cond:
            if self._landed is not None:
                self._landed.record(torch.cuda.current_stream(self.device))
            self.versions[1 - self.active] = version
            self._staged = True

    def swap_if_staged(self) -> bool:
        """Make the staged version active (on a GPU, once the caller's current stream has
        waited for its bytes)."""
        with self._cond:
            if not self._staged:
                return False
            if self._landed is not None:
                stream = torch.cuda.current_stream(self.device)
                self._released.record(stream)
                stream.wait_event(self._landed)
            self.active = 1 - self.active
            self._staged = False
            self._cond.notify_all()
            return True
