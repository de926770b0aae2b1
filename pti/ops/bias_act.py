"""Fused bias + activation + gain + clamp: `bias_act`, with a pure-PyTorch reference and a CUDA kernel."""
from __future__ import annotations

import math
from dataclasses import dataclass
from types import ModuleType

import torch
import torch.nn.functional as F
from pti.ops.cuda_plugin import Kernels, OpsImplError, run_kernel, select_kernels
from pti.ops.layout import dense_memory_format, is_dense


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
    impl: str | Kernels = "auto",
    inplace: bool = False,
) -> torch.Tensor:
    """Return `clamp(act(x + b) * gain, -clamp, clamp)`, `b` broadcast along `dim`.

    The same on every path: `b` is cast to x's dtype first (a float16 x with a float32 bias gives float16); the result
    has x's dtype, and x's layout when x is contiguous or channels-last; `inplace=True` writes the result into x and
    returns x. Differentiable twice (the gradient is itself an op whose derivative w.r.t. the output is zero a.e.).
    """
    spec = _activation(act)
    alpha = float(spec.default_alpha if alpha is None else alpha)
    gain = float(spec.default_gain if gain is None else gain)
    clamp = float(-1 if clamp is None else clamp)
    if gain <= 0:
        raise ValueError(f"bias_act needs a positive gain, got {gain}")
    if b is not None and (b.ndim != 1 or b.shape[0] != x.shape[dim]):
        raise ValueError(f"bias of shape {tuple(b.shape)} does not match x dimension {dim} of {tuple(x.shape)}")
    params = _Params(dim=dim % x.ndim, code=spec.code, alpha=alpha, gain=gain, clamp=clamp)
    kernels = select_kernels(impl, x)
    if kernels is None and torch.compiler.is_compiling():  # the compiler fuses the plain formula (and its gradient)
        y = _bias_act_formula(x, b, params.dim, spec.code, alpha, gain, clamp)
        return x.copy_(y) if inplace else y
    return _BiasAct.apply(x, b, params, kernels, inplace)


@dataclass(frozen=True)
class _Params:
    """bias_act's resolved scalar arguments."""

    dim: int  # the dimension the bias runs along, non-negative
    code: int  # Activation.code
    alpha: float
    gain: float
    clamp: float  # negative: no clamp


def _bias_act_formula(
    x: torch.Tensor, b: torch.Tensor | None, dim: int, code: int, alpha: float, gain: float, clamp: float
) -> torch.Tensor:
    """bias_act as a plain out-of-place expression (for torch.compile)."""
    if b is not None:
        x = x + b.to(x.dtype).reshape(_bias_shape(x, dim))
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


class _BiasAct(torch.autograd.Function):
    """bias_act on the reference (kernels None) or on the given kernels; the gradient comes from the output."""

    @staticmethod
    def forward(ctx, x, b, params, kernels, inplace):  # noqa: D102 - autograd protocol
        bias = None if b is None else b.to(x.dtype)
        if kernels is None:
            y = _forward_ref(x, bias, params, inplace)
        else:
            y = run_kernel(kernels, lambda module: _forward_kernel(module, x, bias, params, inplace),
                           lambda: _forward_ref(x, bias, params, inplace))
        if inplace:
            ctx.mark_dirty(x)
        ctx.save_for_backward(y)
        ctx.params, ctx.kernels, ctx.bias_dtype = params, kernels, None if b is None else b.dtype
        return y

    @staticmethod
    def backward(ctx, grad_y):  # noqa: D102 - autograd protocol
        (y,) = ctx.saved_tensors
        grad_x = _BiasActGrad.apply(grad_y, y, ctx.params, ctx.kernels)
        grad_b = None
        if ctx.bias_dtype is not None and ctx.needs_input_grad[1]:
            grad_b = _sum_except(grad_x, ctx.params.dim).to(ctx.bias_dtype)
        return grad_x, grad_b, None, None, None


class _BiasActGrad(torch.autograd.Function):
    """The gradient of bias_act w.r.t. x, from the output y: linear in grad_y, piecewise constant in y."""

    @staticmethod
    def forward(ctx, grad_y, y, params, kernels):  # noqa: D102 - autograd protocol
        ctx.save_for_backward(y)
        ctx.params, ctx.kernels = params, kernels
        if kernels is None:
            return _grad_ref(grad_y, y, params)
        return run_kernel(kernels, lambda module: _grad_kernel(module, grad_y, y, params),
                          lambda: _grad_ref(grad_y, y, params))

    @staticmethod
    def backward(ctx, grad_grad_x):  # noqa: D102 - autograd protocol
        (y,) = ctx.saved_tensors
        # The same slopes apply to grad_y; the slopes do not change with y (almost everywhere): no gradient for y.
        return _BiasActGrad.apply(grad_grad_x, y, ctx.params, ctx.kernels), None, None, None


def _forward_ref(x: torch.Tensor, bias: torch.Tensor | None, p: _Params, inplace: bool) -> torch.Tensor:
    """Reference forward: in-place passes over one output buffer (x itself when `inplace`)."""
    if bias is not None:
        y = x.add_(bias.reshape(_bias_shape(x, p.dim))) if inplace else x + bias.reshape(_bias_shape(x, p.dim))
    else:
        y = x if inplace else x.clone()
    if p.code == ACTIVATIONS["relu"].code:
        y.relu_()
    elif p.code == ACTIVATIONS["lrelu"].code:
        F.leaky_relu_(y, p.alpha)
    if p.gain != 1:
        y.mul_(p.gain)
    if p.clamp >= 0:
        y.clamp_(-p.clamp, p.clamp)
    return y


def _forward_kernel(module: ModuleType, x: torch.Tensor, bias: torch.Tensor | None, p: _Params,
                    inplace: bool) -> torch.Tensor:
    """Kernel forward over dense memory: x itself when dense, else a dense copy (written back into x if `inplace`)."""
    source = x if is_dense(x) else x.contiguous()
    out = source if inplace else torch.empty_like(source)  # empty_like keeps source's exact strides
    bias_stride = source.stride(p.dim) if source.shape[p.dim] > 1 else 1  # any stride is valid along size 1
    module.bias_act_forward(source, source.new_empty([0]) if bias is None else bias.contiguous(), out, bias_stride,
                            source.shape[p.dim], p.code, p.alpha, p.gain, p.clamp)
    return x.copy_(out) if inplace and out is not x else out


def _grad_ref(grad_y: torch.Tensor, y: torch.Tensor, p: _Params) -> torch.Tensor:
    """Reference gradient from the output, in y's layout."""
    grad_y = grad_y.contiguous(memory_format=dense_memory_format(y))  # same layout: vectorised passes
    clamp = p.clamp
    if clamp >= 0 and y.device.type == "cpu" and _inside(y, clamp):
        clamp = -1  # no value reached the clamp: one read of y instead of a pass over the gradient
    return _grad_from_output(grad_y, y, p.code, p.alpha, p.gain, clamp)


def _grad_kernel(module: ModuleType, grad_y: torch.Tensor, y: torch.Tensor, p: _Params) -> torch.Tensor:
    """Kernel gradient from the output, over dense memory in y's layout."""
    y = y if is_dense(y) else y.contiguous()
    grad_y = grad_y.contiguous(memory_format=dense_memory_format(y))
    grad_x = torch.empty_like(y)
    module.bias_act_backward(grad_y, y, grad_x, p.code, p.alpha, p.gain, p.clamp)
    return grad_x


def _inside(y: torch.Tensor, clamp: float) -> bool:
    """Whether every value of `y` (contiguous or channels-last) lies strictly inside (-clamp, clamp)."""
    if y.numel() == 0:
        return True
    values = y.permute(0, 2, 3, 1) if y.ndim == 4 and not y.is_contiguous() else y  # memory order: a fast reduction
    low, high = torch.aminmax(values.reshape(-1))
    # Compared in y's dtype, as the forward clamped: a bound like 0.7 rounds down in float32, and a value clamped to
    # it would pass a comparison with the Python float.
    return bool(((low > -clamp) & (high < clamp)).item())
