"""Helpers of the ops tests: independent formulas, shared cases, and the kernels' host emulation (built once)."""
from __future__ import annotations

import functools

import torch

from pti.ops.cuda_plugin import Kernels


@functools.cache
def emulated_kernels() -> Kernels:
    """The CUDA kernels' host emulation, built (ninja: only what changed) once per test session; errors raise."""
    from pti.ops.build import build_host_emulation

    return Kernels(build_host_emulation())


def explicit_upfirdn2d(x, f2d, up, down, pad, gain=1.0, flip_filter=False):
    """Independent upfirdn2d: zero insertion by index assignment, explicit pad/crop, filter taps summed in a loop."""
    (upx, upy), (downx, downy), (px0, px1, py0, py1) = up, down, pad
    n, c, h, w = x.shape
    z = x.new_zeros([n, c, h * upy, w * upx])
    z[:, :, ::upy, ::upx] = x
    big = z.new_zeros([n, c, h * upy + max(py0, 0) + max(py1, 0), w * upx + max(px0, 0) + max(px1, 0)])
    big[:, :, max(py0, 0) : max(py0, 0) + h * upy, max(px0, 0) : max(px0, 0) + w * upx] = z
    big = big[:, :, max(-py0, 0) : big.shape[2] - max(-py1, 0), max(-px0, 0) : big.shape[3] - max(-px1, 0)]
    fh, fw = f2d.shape
    kernel = f2d if flip_filter else f2d.flip([0, 1])  # convolution = correlation with the flipped filter
    out_h, out_w = big.shape[2] - fh + 1, big.shape[3] - fw + 1
    out = x.new_zeros([n, c, out_h, out_w])
    for ky in range(fh):
        for kx in range(fw):
            out += kernel[ky, kx] * big[:, :, ky : ky + out_h, kx : kx + out_w]
    return out[:, :, ::downy, ::downx] * gain


UPFIRDN_CASES = [
    # (up, down, padding, filter, flip_filter, gain)
    ((1, 1), (1, 1), (0, 0, 0, 0), [1, 3, 3, 1], False, 1.0),
    ((2, 2), (1, 1), (2, 1, 2, 1), [1, 3, 3, 1], False, 4.0),
    ((1, 1), (2, 2), (1, 1, 1, 1), [1, 3, 3, 1], True, 1.0),
    ((3, 2), (1, 2), (1, -1, 2, 0), [1, 2, 3, 4, 5], False, 0.5),
    ((2, 1), (2, 1), (-2, 3, 0, 1), [[1, 2, 0], [0, -1, 3]], True, 2.0),
    ((1, 2), (3, 1), (3, 0, -1, 2), [1, 4, 6, 4, 1, 2, 5, 7], False, 1.5),  # 8 taps: separable
    ((1, 1), (2, 1), (3, 3, 1, 1), [1, 4, 6, 4, 1, 2, 5, 7], True, 1.0),
    ((1, 1), (1, 1), (2, -1, 0, 3), [1, 4, 6, 4, 1, 2, 5, 7], False, 2.0),
]


def explicit_bias_act(x, b, dim, act, alpha, gain, clamp):
    """Independent formula for bias_act, elementwise with torch.where."""
    shape = [1] * x.ndim
    shape[dim] = -1
    v = x + b.reshape(shape)
    if act == "relu":
        v = torch.where(v > 0, v, torch.zeros_like(v))
    elif act == "lrelu":
        v = torch.where(v > 0, v, v * alpha)
    v = v * gain
    if clamp is not None:
        v = torch.minimum(torch.maximum(v, torch.full_like(v, -clamp)), torch.full_like(v, clamp))
    return v


DEFAULTS = {"linear": (0.0, 1.0), "relu": (0.0, 2**0.5), "lrelu": (0.2, 2**0.5)}  # (alpha, gain) per activation


def away_from_kinks(v, act, alpha, gain, clamp, margin=0.01):
    """Move pre-activation values at least `margin` away from the kinks of bias_act (where the slope jumps),
    so that float16 rounding cannot put the reference and the kernel on different sides of one."""
    kinks = [] if act == "linear" else [0.0]
    if clamp is not None:
        kinks += [clamp / gain] + ([-clamp / gain] if act == "linear" else [])
        kinks += [-clamp / (alpha * gain)] if act == "lrelu" else []
    for kink in kinks:
        near = (v - kink).abs() < margin
        v = torch.where(near, v + 2 * margin * torch.where(v >= kink, 1.0, -1.0), v)
    return v


