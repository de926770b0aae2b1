"""The ops plugin's self-test: its kernels against the reference ops on small random inputs (values and gradients)."""
from __future__ import annotations

import torch

from pti.ops.bias_act import bias_act
from pti.ops.cuda_plugin import Kernels
from pti.ops.upfirdn2d import setup_filter, upfirdn2d

_TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2}  # relative to the values' scale; the reference runs in float64


class SelfTestError(RuntimeError):
    """The kernels disagree with the reference ops."""


def _check(name: str, got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype) -> None:
    """Raise SelfTestError unless `got` (in `dtype`) matches the float64 reference `want`."""
    if got.dtype != dtype or got.shape != want.shape:
        raise SelfTestError(f"{name}: got {got.dtype} {tuple(got.shape)}, expected {dtype} {tuple(want.shape)}")
    error = (got.double() - want).abs().max().item() if want.numel() else 0.0
    scale = max(want.abs().max().item() if want.numel() else 0.0, 1.0)
    if not error <= _TOLERANCE[dtype] * scale:  # also catches NaN
        raise SelfTestError(f"{name}: the kernels differ from the reference by {error:.3g} (scale {scale:.3g})")


def _bias_act_case(kernels: Kernels, device: torch.device, dtype: torch.dtype, act: str, clamp: float | None,
                   channels_last: bool, generator: torch.Generator) -> None:
    """One bias_act comparison. float16 inputs are multiples of 1/8 plus 1/16: never at a kink, exact in float16."""
    shape = [2, 5, 3, 4]
    if dtype == torch.float16:
        x = (torch.randint(-16, 16, shape, generator=generator) / 8 + 1 / 16).to(device)
        b = (torch.randint(-4, 4, [5], generator=generator) / 4).to(device)
    else:
        x = torch.randn(shape, generator=generator).to(device)
        b = torch.randn([5], generator=generator).to(device)
    dy = torch.randn(shape, generator=generator).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    results = []
    for impl, run_dtype in ((kernels, dtype), ("ref", torch.float64)):
        xi = x.to(run_dtype).requires_grad_(True)
        bi = b.to(run_dtype).requires_grad_(True)
        y = bias_act(xi, bi, act=act, clamp=clamp, impl=impl)
        results.append((y, *torch.autograd.grad(y, [xi, bi], dy.to(run_dtype))))
    for name, got, want in zip(("values", "x gradient", "bias gradient"), *results):
        _check(f"bias_act {act} clamp={clamp} {dtype} {name}", got, want, dtype)


def _upfirdn2d_case(kernels: Kernels, device: torch.device, dtype: torch.dtype, up: int, down: int, padding: int,
                    channels_last: bool, generator: torch.Generator) -> None:
    """One upfirdn2d comparison, values and gradient."""
    f = setup_filter([1, 3, 4, 2], device=device)  # asymmetric: a flipped filter shows
    x = torch.randn([2, 3, 7, 6], generator=generator).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    results = []
    for impl, run_dtype in ((kernels, dtype), ("ref", torch.float64)):
        xi = x.to(run_dtype).requires_grad_(True)
        y = upfirdn2d(xi, f, up=up, down=down, padding=padding, gain=up * up, impl=impl)
        dy = torch.randn(y.shape, generator=generator.manual_seed(1)).to(device, run_dtype)
        results.append((y, *torch.autograd.grad(y, xi, dy)))
    for name, got, want in zip(("values", "gradient"), *results):
        _check(f"upfirdn2d up={up} down={down} {dtype} {name}", got, want, dtype)


def self_test(kernels: Kernels, device: torch.device) -> None:
    """Run the kernels on `device` against the reference ops; raise SelfTestError (or the kernels' error) on failure."""
    generator = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float16):
        for channels_last in (False, True):
            for act, clamp in (("linear", None), ("relu", 0.5), ("lrelu", 1.0)):
                _bias_act_case(kernels, device, dtype, act, None if dtype == torch.float16 else clamp,
                               channels_last, generator)
            for up, down, padding in ((2, 1, 1), (1, 2, 1), (1, 1, -1)):
                _upfirdn2d_case(kernels, device, dtype, up, down, padding, channels_last, generator)
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # an asynchronous kernel error surfaces here, inside the self-test
