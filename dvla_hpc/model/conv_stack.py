"""The conv encoder's layer shapes: torch-free, so the config loader can check image sizes on
ranks that never import torch (sim ranks)."""
from __future__ import annotations

CONV_STACK = ((32, 8, 4), (64, 4, 2), (128, 3, 2))  # (out channels, kernel, stride)


def conv_output_size(size: int, kernel: int, stride: int) -> int:
    return (size - kernel) // stride + 1


def min_conv_image_size() -> int:
    size = 1
    for _, kernel, stride in reversed(CONV_STACK):
        size = (size - 1) * stride + kernel
    return size
