"""Up-sample, FIR-filter, down-sample (`upfirdn2d`) and its helpers, with a PyTorch reference and a CUDA kernel.

Conventions (those of StyleGAN2-ADA, so that its resample filters mean the same here):
up-sampling inserts `up - 1` zeros after every input sample; the result is padded (negative padding crops);
then convolved with the filter (a true convolution, i.e. the filter is flipped, unless `flip_filter`);
then every `down`-th sample is kept. The filter is scaled so that it has `gain` as total gain.
"""
from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

import torch
import torch.nn.functional as F
from pti.ops.cuda_plugin import Kernels, run_kernel, select_kernels
from pti.ops.layout import dense_memory_format

Padding = int | Sequence[int]
Factor = int | Sequence[int]


def setup_filter(
    f: Sequence[float] | torch.Tensor | None,
    device: torch.device | str | None = None,
    normalize: bool = True,
    flip_filter: bool = False,
    gain: float = 1,
    separable: bool | None = None,
) -> torch.Tensor:
    """Make a float32 FIR filter tensor: 1-D (separable) or 2-D (outer product), normalised to sum 1 by default."""
    f = torch.as_tensor([1] if f is None else f, dtype=torch.float32, device=device)
    if f.ndim == 0:
        f = f[None]
    if f.ndim not in (1, 2) or f.numel() == 0:
        raise ValueError(f"a filter must be a non-empty 1-D or 2-D array, got shape {tuple(f.shape)}")
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if f.ndim != (1 if separable else 2):
        raise ValueError(f"a {'separable' if separable else 'non-separable'} filter cannot have shape {tuple(f.shape)}")
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    return f * (gain ** (f.ndim / 2))


def _pair(value: Factor, name: str) -> tuple[int, int]:
    """(x, y) from an int or a pair; both must be >= 1."""
    pair = (int(value), int(value)) if isinstance(value, int) else tuple(int(v) for v in value)
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"{name} must be a positive int or a pair of them, got {value!r}")
    return pair


def _padding4(padding: Padding) -> tuple[int, int, int, int]:
    """(x0, x1, y0, y1) from an int, a pair (x, y) or four values."""
    if isinstance(padding, int):
        return (padding,) * 4
    padding = tuple(int(p) for p in padding)
    if len(padding) == 2:
        return (padding[0], padding[0], padding[1], padding[1])
    if len(padding) != 4:
        raise ValueError(f"padding must be an int, (x, y) or (x0, x1, y0, y1), got {padding!r}")
    return padding


def _filter_size(f: torch.Tensor) -> tuple[int, int]:
    """(width, height) of a 1-D or 2-D filter."""
    return (int(f.shape[-1]), int(f.shape[0]))


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: Factor = 1,
    down: Factor = 1,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str | Kernels = "auto",
) -> torch.Tensor:
    """Pad, up-sample, FIR-filter and down-sample a batch of images `x` (N, C, H, W) with filter `f` (from setup_filter).

    The same on every path: the result has x's dtype, and x's memory format (channels-last in, channels-last out).
    Differentiable any number of times (the gradient is the transposed upfirdn2d).
    """
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects x of shape (N, C, H, W), got {tuple(x.shape)}")
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    if f.ndim not in (1, 2) or f.dtype != torch.float32:
        raise ValueError(f"the filter must be a float32 1-D or 2-D tensor, got {f.dtype} of shape {tuple(f.shape)}")
    up, down, padding = _pair(up, "up"), _pair(down, "down"), _padding4(padding)
    fw, fh = _filter_size(f)
    out_w = (x.shape[3] * up[0] + padding[0] + padding[1] - fw) // down[0] + 1
    out_h = (x.shape[2] * up[1] + padding[2] + padding[3] - fh) // down[1] + 1
    if out_w < 1 or out_h < 1:
        raise ValueError(f"upfirdn2d output would be empty for input {tuple(x.shape)}, filter {tuple(f.shape)}")
    kernels = select_kernels(impl, x)
    if kernels is None and torch.compiler.is_compiling():  # the compiler derives the convolutions' gradient itself
        return _upfirdn2d_ref(x, f, up, down, padding, flip_filter, gain)
    return _UpFirDn2d.apply(x, f, up, down, padding, flip_filter, gain, kernels)


def _upfirdn2d_ref(
    x: torch.Tensor,
    f: torch.Tensor,
    up: tuple[int, int],
    down: tuple[int, int],
    padding: tuple[int, int, int, int],
    flip_filter: bool,
    gain: float,
) -> torch.Tensor:
    """Reference upfirdn2d in plain PyTorch: a strided transposed depthwise convolution when up-sampling,
    else a depthwise convolution (strided when down-sampling); padding goes into the convolution when symmetric.
    The result is dense in x's memory format."""
    return _upfirdn2d_convolutions(x, f, up, down, padding, flip_filter, gain).contiguous(
        memory_format=dense_memory_format(x))


def _upfirdn2d_convolutions(
    x: torch.Tensor,
    f: torch.Tensor,
    up: tuple[int, int],
    down: tuple[int, int],
    padding: tuple[int, int, int, int],
    flip_filter: bool,
    gain: float,
) -> torch.Tensor:
    """The convolutions of the reference upfirdn2d (the result may be a strided view)."""
    channels = x.shape[1]
    (upx, upy), (downx, downy), (px0, px1, py0, py1) = up, down, padding
    f = (f * (gain ** (f.ndim / 2))).to(x.dtype)
    if upx > 1 or upy > 1:
        f = torch.outer(f, f) if f.ndim == 1 else f
        fw, fh = _filter_size(f)
        weight = (f.flip([0, 1]) if flip_filter else f)[None, None].expand(channels, 1, fh, fw)
        # The transposed convolution is the full convolution of the zero-inserted input; crop/pad it to the output.
        crop = (fw - 1 - px0, fw - upx - px1, fh - 1 - py0, fh - upy - py1)
        symmetric = crop[0] == crop[1] >= 0 and crop[2] == crop[3] >= 0
        x = F.conv_transpose2d(x, weight, stride=(upy, upx), groups=channels,
                               padding=(crop[2], crop[0]) if symmetric else 0)
        if not symmetric:
            x = F.pad(x, [-c for c in crop])
        if downx > 1 or downy > 1:
            x = x[:, :, ::downy, ::downx]
        return x
    symmetric = px0 == px1 >= 0 and py0 == py1 >= 0
    if not symmetric:
        x = F.pad(x, [px0, px1, py0, py1])  # negative padding crops
    pad_y, pad_x = (py0, px0) if symmetric else (0, 0)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 2:
        weight = f[None, None].expand(channels, 1, *f.shape)
        return F.conv2d(x, weight, stride=(downy, downx), padding=(pad_y, pad_x), groups=channels)
    x = F.conv2d(x, f[None, None, None, :].expand(channels, 1, 1, -1), stride=(1, downx), padding=(0, pad_x),
                 groups=channels)
    return F.conv2d(x, f[None, None, :, None].expand(channels, 1, -1, 1), stride=(downy, 1), padding=(pad_y, 0),
                    groups=channels)


class _UpFirDn2d(torch.autograd.Function):
    """upfirdn2d on the reference (kernels None) or on the given kernels. The gradient is the transposed upfirdn2d,
    run the same way: differentiable again, and on the CPU several times faster than the convolutions' own backward."""

    @staticmethod
    def forward(ctx, x, f, up, down, padding, flip_filter, gain, kernels):  # noqa: D102 - autograd protocol
        ctx.save_for_backward(f)
        ctx.params = (tuple(x.shape), up, down, padding, flip_filter, gain, kernels)
        if kernels is None:
            return _upfirdn2d_ref(x, f, up, down, padding, flip_filter, gain)
        return run_kernel(kernels, lambda module: _upfirdn2d_kernel(module, x, f, up, down, padding, flip_filter, gain),
                          lambda: _upfirdn2d_ref(x, f, up, down, padding, flip_filter, gain))

    @staticmethod
    def backward(ctx, grad_y):  # noqa: D102 - autograd protocol
        (f,) = ctx.saved_tensors
        in_shape, up, down, padding, flip_filter, gain, kernels = ctx.params
        t_up, t_down, t_padding = transposed_upfirdn2d_args(in_shape, tuple(grad_y.shape), f, up, down, padding)
        grad_x = _UpFirDn2d.apply(grad_y, f, t_up, t_down, t_padding, not flip_filter, gain, kernels)
        return grad_x, None, None, None, None, None, None, None


def _upfirdn2d_kernel(
    module: ModuleType,
    x: torch.Tensor,
    f: torch.Tensor,
    up: tuple[int, int],
    down: tuple[int, int],
    padding: tuple[int, int, int, int],
    flip_filter: bool,
    gain: float,
) -> torch.Tensor:
    """upfirdn2d through the kernel: x read in place (any strides), the result dense in x's memory format."""
    f2 = torch.outer(f, f) if f.ndim == 1 else f
    f2 = f2 * gain  # the kernel applies a 2-D, gain-scaled filter in correlation order
    kernel = (f2 if flip_filter else f2.flip([0, 1])).contiguous().to(x.device)
    channels_last = dense_memory_format(x) == torch.channels_last
    return module.upfirdn2d(x, kernel, *up, *down, *padding, channels_last)


def transposed_upfirdn2d_args(
    in_shape: Sequence[int],
    out_shape: Sequence[int],
    f: torch.Tensor,
    up: tuple[int, int],
    down: tuple[int, int],
    padding: tuple[int, int, int, int],
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int, int, int]]:
    """(up, down, padding) of the upfirdn2d (with the filter flipped) that maps output gradients to input gradients."""
    fw, fh = _filter_size(f)
    (upx, upy), (downx, downy), (px0, _, py0, _) = up, down, padding
    in_h, in_w, out_h, out_w = in_shape[2], in_shape[3], out_shape[2], out_shape[3]
    transposed_padding = (
        fw - px0 - 1,
        in_w * upx - out_w * downx + px0 - upx + 1,
        fh - py0 - 1,
        in_h * upy - out_h * downy + py0 - upy + 1,
    )
    return (downx, downy), (upx, upy), transposed_padding


def filter2d(
    x: torch.Tensor, f: torch.Tensor | None, padding: Padding = 0, flip_filter: bool = False, gain: float = 1,
    impl: str = "auto",
) -> torch.Tensor:
    """FIR-filter `x` with `f`, padded so that the output has the input's size (plus `padding`)."""
    px0, px1, py0, py1 = _padding4(padding)
    fw, fh = _filter_size(f) if f is not None else (1, 1)
    p = [px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(
    x: torch.Tensor, f: torch.Tensor | None, up: Factor = 2, padding: Padding = 0, flip_filter: bool = False,
    gain: float = 1, impl: str = "auto",
) -> torch.Tensor:
    """Up-sample `x` by `up` with FIR filter `f` (output size = input size * up, plus `padding`)."""
    upx, upy = _pair(up, "up")
    px0, px1, py0, py1 = _padding4(padding)
    fw, fh = _filter_size(f) if f is not None else (1, 1)
    p = [px0 + (fw + upx - 1) // 2, px1 + (fw - upx) // 2, py0 + (fh + upy - 1) // 2, py1 + (fh - upy) // 2]
    return upfirdn2d(x, f, up=(upx, upy), padding=p, flip_filter=flip_filter, gain=gain * upx * upy, impl=impl)


def downsample2d(
    x: torch.Tensor, f: torch.Tensor | None, down: Factor = 2, padding: Padding = 0, flip_filter: bool = False,
    gain: float = 1, impl: str = "auto",
) -> torch.Tensor:
    """FIR-filter `x` with `f` and down-sample by `down` (output size = input size / down, plus `padding`)."""
    downx, downy = _pair(down, "down")
    px0, px1, py0, py1 = _padding4(padding)
    fw, fh = _filter_size(f) if f is not None else (1, 1)
    p = [px0 + (fw - downx + 1) // 2, px1 + (fw - downx) // 2, py0 + (fh - downy + 1) // 2, py1 + (fh - downy) // 2]
    return upfirdn2d(x, f, down=(downx, downy), padding=p, flip_filter=flip_filter, gain=gain, impl=impl)
