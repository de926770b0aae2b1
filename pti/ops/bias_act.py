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
) -> torch.Tensor:
    """Return `clamp(act(x + b) * gain, -clamp, clamp)`, with `b` broadcast along dimension `dim` of `x`."""
    spec = _activation(act)
    alpha = float(spec.default_alpha if alpha is None else alpha)
    gain = float(spec.default_gain if gain is None else gain)
    clamp = float(-1 if clamp is None else clamp)
    if b is not None:
        if b.ndim != 1 or b.shape[0] != x.shape[dim]:
            raise ValueError(f"bias of shape {tuple(b.shape)} does not match x dimension {dim} of {tuple(x.shape)}")
    if select_impl(impl, x) == "cuda":
        return _BiasActCuda.apply(x, b, dim, spec.code, alpha, gain, clamp)
    return _bias_act_ref(x, b, dim, act, alpha, gain, clamp)


def _bias_act_ref(
    x: torch.Tensor, b: torch.Tensor | None, dim: int, act: str, alpha: float, gain: float, clamp: float
) -> torch.Tensor:
    """Reference bias_act in plain PyTorch (differentiable by autograd)."""
    if b is not None:
        x = x + b.reshape([-1 if i == dim % x.ndim else 1 for i in range(x.ndim)])
    if act == "relu":
        x = F.relu(x)
    elif act == "lrelu":
        x = F.leaky_relu(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


class _BiasActCuda(torch.autograd.Function):
    """bias_act through the CUDA kernel; the backward is a second kernel that recomputes the activation."""

    @staticmethod
    def forward(ctx, x, b, dim, code, alpha, gain, clamp):  # noqa: D102 - autograd protocol
        plugin = load_cuda_extension()
        x = x.contiguous()
        bias = b.contiguous().to(x.dtype) if b is not None else x.new_empty([0])
        ctx.save_for_backward(x, bias)
        ctx.params = (dim % x.ndim, code, alpha, gain, clamp, None if b is None else b.dtype)
        return plugin.bias_act_forward(x, bias, ctx.params[0], code, alpha, gain, clamp)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):  # noqa: D102 - autograd protocol
        x, bias = ctx.saved_tensors
        dim, code, alpha, gain, clamp, bias_dtype = ctx.params
        grad_x = load_cuda_extension().bias_act_backward(grad_y.contiguous(), x, bias, dim, code, alpha, gain, clamp)
        grad_b = None
        if bias_dtype is not None and ctx.needs_input_grad[1]:
            grad_b = grad_x.sum([i for i in range(grad_x.ndim) if i != dim], dtype=torch.float32).to(bias_dtype)
        return grad_x, grad_b, None, None, None, None, None
