"""uint8 camera frames as float32, in one buffer reused from call to call."""
from __future__ import annotations

import torch


class FloatFrames:
    """A training minibatch's frames as float32 are tens of megabytes (800 64x64 RGB frames:
    39 MB). Allocated anew every step, glibc maps a block that size fresh and the kernel faults it
    in page by page: about 10,000 page faults and a tenth of a Reacher training step's CPU. This
    keeps the largest batch seen and returns a view of its first rows, values still 0-255 (the
    encoders fold the 1/255 into their first weights).

    One instance serves one module, called by one thread. If a forward overwrites frames that a
    pending backward saved, autograd's version counter makes that backward raise instead of
    computing wrong gradients."""

    def __init__(self):
        self._buffer: torch.Tensor | None = None

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        buffer = self._buffer
        if (buffer is None or buffer.shape[1:] != images.shape[1:] or buffer.shape[0] < images.shape[0]
                or buffer.device != images.device):
            buffer = self._buffer = torch.empty(images.shape, dtype=torch.float32, device=images.device)
        return buffer[: images.shape[0]].copy_(images)
