"""Fused bias + activation + gain + clamp: `bias_act`, with a pure-PyTorch reference and a CUDA kernel."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from pti.ops.cuda_plugin import OpsImplError, load_cuda_extension, select_impl


@dataclass(frozen=True)
class Activation:
    """One supported activation: its CUDA kernel code, default slope and default gain."""

    code: int  # selects the activation inside the CUDA kernel
    default_alpha: float  # negative slope (only 'lrelu' uses it)
    default_gain: float  # output scale that keeps the activations' variance (He et al.)


ACTIVATIONS: dict[str, Activation] = {
    "linear": Activation(code=0, default_alpha=0.0, default_gain=1.0),
    "relu": Activation(code=1, default_alpha=0.0, default_gain=math.sqrt(2)),
    "lrelu": Activation(code=2, default_alpha=0.2, default_gain=math.sqrt(2)),
}


def _activation(act: str) -> Activation:
    """Look up an activation by name, with a clear error for unknown names."""
    try:
        return ACTIVATIONS[act]
    except KeyError:
        raise OpsImplError(f"unknown activation {act!r}; supported: {sorted(ACTIVATIONS)}") from None


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    dim: int = 1,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
    impl: str = "auto",
    inplace: bool = False,
) -> torch.Tensor:
    """Return `clamp(act(x + b) * gain, -clamp, clamp)`, `b` broadcast along `dim`; `inplace` reuses x's memory."""
    spec = _activation(act)
    alpha = float(spec.default_alpha if alpha is None else alpha)
    gain = float(spec.default_gain if gain is None else gain)
    clamp = float(-1 if clamp is None else clamp)
    if gain <= 0:
        raise ValueError(f"bias_act needs a positive gain, got {gain}")
    if b is not None and (b.ndim != 1 or b.shape[0] != x.shape[dim]):
        raise ValueError(f"bias of shape {tuple(b.shape)} does not match x dimension {dim} of {tuple(x.shape)}")
    if select_impl(impl, x) == "cuda":
        return _BiasActCuda.apply(x, b, dim % x.ndim, spec.code, alpha, gain, clamp, inplace)
    if torch.compiler.is_compiling():  # the compiler fuses the plain formula (and derives its gradient) itself
        return _bias_act_formula(x, b, dim % x.ndim, spec.code, alpha, gain, clamp)
    return _BiasActRef.apply(x, b, dim % x.ndim, spec.code, alpha, gain, clamp, inplace)


def _bias_act_formula(
    x: torch.Tensor, b: torch.Tensor | None, dim: int, code: int, alpha: float, gain: float, clamp: float
) -> torch.Tensor:
    """bias_act as a plain out-of-place expression (for torch.compile)."""
    if b is not None:
        x = x + b.reshape(_bias_shape(x, dim))
    if code == ACTIVATIONS["relu"].code:
        x = F.relu(x)
    elif code == ACTIVATIONS["lrelu"].code:
        x = F.leaky_relu(x, alpha)
    if gain != 1:
        x = x * gain
    return x.clamp(-clamp, clamp) if clamp >= 0 else x


def _bias_shape(x: torch.Tensor, dim: int) -> list[int]:
    """Shape that broadcasts a bias vector along dimension `dim` of `x`."""
    return [-1 if i == dim else 1 for i in range(x.ndim)]


def _sum_except(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sum over every dimension but `dim`, accumulating half precision in float32."""
    return t.sum([i for i in range(t.ndim) if i != dim], dtype=torch.promote_types(t.dtype, torch.float32))


def _grad_from_output(grad_y: torch.Tensor, y: torch.Tensor, code: int, alpha: float, gain: float, clamp: float):
    """Gradient of bias_act w.r.t. its input, from the output `y` (valid for the supported activations, gain > 0).

    The sign of `y` is the sign of the activation's input, and |y| >= clamp where the clamp was active.
    """
    grad = grad_y if clamp < 0 else torch.ops.aten.hardtanh_backward(grad_y, y, -clamp, clamp)
    # Later passes write into the buffer made by the first one instead of allocating another (a fresh 1024 px
    # buffer costs as much in page faults as the pass itself); grad_y itself is never written to.
    owned = grad is not grad_y
    if code == ACTIVATIONS["lrelu"].code:
        out = {"grad_input": grad} if owned else {}
        grad = torch.ops.aten.leaky_relu_backward(grad, y, alpha, True, **out)
    elif code == ACTIVATIONS["relu"].code:
        out = {"grad_input": grad} if owned else {}
        grad = torch.ops.aten.threshold_backward(grad, y, 0, **out)
    owned = grad is not grad_y
    if gain != 1:
        grad = grad.mul_(gain) if owned else grad * gain
    return grad


class _BiasActRef(torch.autograd.Function):
    """Reference bias_act in plain PyTorch: in-place passes over one output buffer, gradient from the output."""

    @staticmethod
    def forward(ctx, x, b, dim, code, alpha, gain, clamp, inplace):  # noqa: D102 - autograd protocol
        if b is not None:
            y = x.add_(b.reshape(_bias_shape(x, dim))) if inplace else x + b.reshape(_bias_shape(x, dim))
        else:
            y = x if inplace else x.clone()
        if code == ACTIVATIONS["relu"].code:
            y.relu_()
        elif code == ACTIVATIONS["lrelu"].code:
            F.leaky_relu_(y, alpha)
        if gain != 1:
            y.mul_(gain)
        if clamp >= 0:
            y.clamp_(-clamp, clamp)
        if inplace:
            ctx.mark_dirty(x)
        ctx.save_for_backward(y)
        ctx.params = (dim, code, alpha, gain, clamp, None if b is None else b.dtype)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):  # noqa: D102 - autograd protocol
        (y,) = ctx.saved_tensors
        dim, code, alpha, gain, clamp, bias_dtype = ctx.params
        grad_y = grad_y.contiguous(memory_format=_dense_memory_format(y))  # same layout: vectorised passes
        if clamp >= 0 and y.device.type == "cpu" and _inside(y, clamp):
            clamp = -1  # no value reached the clamp: one read of y instead of a pass over the gradient
        grad_x = _grad_from_output(grad_y, y, code, alpha, gain, clamp)
        grad_b = None
        if bias_dtype is not None and ctx.needs_input_grad[1]:
            grad_b = _sum_except(grad_x, dim).to(bias_dtype)
        return grad_x, grad_b, None, None, None, None, None, None


def _inside(y: torch.Tensor, clamp: float) -> bool:
    """Whether every value of `y` (contiguous or channels-last) lies strictly inside (-clamp, clamp)."""
    if y.numel() == 0:
        return True
    values = y.permute(0, 2, 3, 1) if y.ndim == 4 and not y.is_contiguous() else y  # memory order: a fast reduction
    low, high = torch.aminmax(values.reshape(-1))
    # Compared in y's dtype, as the forward clamped: a bound like 0.7 rounds down in float32, and a value clamped to
    # it would pass a comparison with the Python float.
    return bool(((low > -clamp) & (high < clamp)).item())


def _dense_memory_format(x: torch.Tensor) -> torch.memory_format:
    """channels_last for 4-D tensors stored that way, else the plain contiguous format."""
    if x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


class _BiasActCuda(torch.autograd.Function):
    """bias_act through one CUDA kernel; the backward is a second kernel working from the output."""

    @staticmethod
    def forward(ctx, x, b, dim, code, alpha, gain, clamp, inplace):  # noqa: D102 - autograd protocol
        memory_format = _dense_memory_format(x)
        source = x.contiguous(memory_format=memory_format)
        bias = b.contiguous().to(x.dtype) if b is not None else x.new_empty([0])
        out = source if inplace and source is x else torch.empty_like(source, memory_format=memory_format)
        load_cuda_extension().bias_act_forward(
            source, bias, out, source.stride(dim), source.shape[dim], code, alpha, gain, clamp
        )
        if inplace and out is x:
            ctx.mark_dirty(x)
        ctx.save_for_backward(out)
        ctx.params = (dim, code, alpha, gain, clamp, None if b is None else b.dtype, memory_format)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):  # noqa: D102 - autograd protocol
        (y,) = ctx.saved_tensors
        dim, code, alpha, gain, clamp, bias_dtype, memory_format = ctx.params
        grad_y = grad_y.contiguous(memory_format=memory_format)
        grad_x = torch.empty_like(y, memory_format=memory_format)
        load_cuda_extension().bias_act_backward(grad_y, y, grad_x, code, alpha, gain, clamp)
        grad_b = None
        if bias_dtype is not None and ctx.needs_input_grad[1]:
            grad_b = _sum_except(grad_x, dim).to(bias_dtype)
        return grad_x, grad_b, None, None, None, None, None, None
