"""2-D convolution with optional FIR up-sampling (StyleGAN2's `conv2d_resample`, the paths the generator uses)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pti.ops.upfirdn2d import upfirdn2d


def conv2d_resample(
    x: torch.Tensor,
    w: torch.Tensor,
    f: torch.Tensor | None = None,
    up: int = 1,
    padding: int = 0,
    groups: int = 1,
    flip_weight: bool = True,
    bias: torch.Tensor | None = None,
    impl: str = "auto",
) -> torch.Tensor:
    """Convolve `x` with `w` (O, I/groups, k, k), plus `bias` (O); with `up=2`, up-sample first using FIR filter `f`.

    `flip_weight=True` means correlation (what `F.conv2d` computes), False a true convolution.
    The up-sampling path is a stride-2 transposed convolution followed by the FIR filter, which is equal
    to zero insertion, FIR filtering and a plain convolution, at a quarter of the cost.
    """
    out_channels, in_per_group, kh, kw = w.shape
    if kh != kw:
        raise ValueError(f"conv2d_resample expects square kernels, got {tuple(w.shape)}")
    if up == 1:
        if not flip_weight:
            w = w.flip([2, 3])
        return F.conv2d(x, w, bias=bias, padding=padding, groups=groups)
    if up != 2 or f is None:
        raise ValueError(f"conv2d_resample supports up=1, or up=2 with a filter; got up={up}")
    fw = int(f.shape[-1])
    pad0 = padding + (fw + up - 1) // 2 - (kw - 1)
    pad1 = padding + (fw - up) // 2 - (kw - up)
    transposed_pad = max(min(-pad0, -pad1), 0)
    if groups == 1:
        w = w.transpose(0, 1)
    else:
        w = w.reshape(groups, out_channels // groups, in_per_group, kh, kw).transpose(1, 2)
        w = w.reshape(groups * in_per_group, out_channels // groups, kh, kw)
    if flip_weight:  # conv_transpose2d already convolves (flips); undo it for correlation semantics
        w = w.flip([2, 3])
    if groups == 1 and transposed_pad == 0 and x.device.type == "cpu" and x.is_contiguous():
        x = _conv_transpose2d_as_matmul(x, w, stride=up)
    else:
        x = F.conv_transpose2d(x, w, stride=up, padding=transposed_pad, groups=groups)
    pad = [pad0 + transposed_pad, pad1 + transposed_pad] * 2
    x = upfirdn2d(x, f, padding=pad, gain=up**2, impl=impl)
    return x if bias is None else x.add_(bias.reshape(1, -1, 1, 1))


def _conv_transpose2d_as_matmul(x: torch.Tensor, w: torch.Tensor, stride: int) -> torch.Tensor:
    """`F.conv_transpose2d(x, w, stride=stride)` for contiguous `x` (N, I, H, W) and `w` (I, O, k, k), as one matrix
    product (every input pixel's contribution to its k x k output patch) and `F.fold`, which sums the overlapping
    patches. On the CPU, for the low-resolution 512-channel layers kept in contiguous memory, this is up to 1.6x
    faster than oneDNN's transposed convolution, forward and backward (see bench/README.md)."""
    n, in_channels, h, width = x.shape
    k = w.shape[-1]
    patches = w.reshape(in_channels, -1).t() @ x.reshape(n, in_channels, h * width)  # (N, O*k*k, H*W)
    out_size = ((h - 1) * stride + k, (width - 1) * stride + k)
    return F.fold(patches, out_size, kernel_size=k, stride=stride)
