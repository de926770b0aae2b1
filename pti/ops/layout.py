"""Memory layouts the ops keep: dense contiguous or dense channels-last (4-D)."""
from __future__ import annotations

import torch


def dense_memory_format(x: torch.Tensor) -> torch.memory_format:
    """channels_last for 4-D tensors stored that way (and not also contiguous), else the plain contiguous format."""
    if x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def is_dense(x: torch.Tensor) -> bool:
    """Whether `x` is contiguous or channels-last (what the kernels read and write without a copy)."""
    return x.is_contiguous(memory_format=dense_memory_format(x))
