"""A same-run baseline for bench/generator.py: the reference StyleGAN2-ADA implementation's CPU op sequence.

The reference code is not installable here, so its timings in issue #2 are constants measured elsewhere. This
module re-states what the reference runs in eval mode on the CPU, over the parameters of our `SynthesisNetwork`:
contiguous memory everywhere; every layer modulates and demodulates its weight per sample ("fused modconv", the
reference's eval-mode choice) and runs one grouped convolution; up-sampling as a transposed convolution followed by
`upfirdn2d`'s reference path (zero insertion by padding, then a depthwise convolution with the 2-D filter);
`bias_act`'s reference path out of place (add, leaky ReLU, gain, clamp); the image up-sampled the same way. It
computes the same function as `pti.networks` (tests/test_bench_reference_style.py checks it against the
reference outputs of the fixture), so timing both in one process gives a ratio under the same conditions.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from pti.networks import SynthesisBlock, SynthesisLayer, SynthesisNetwork, ToRGBLayer


def reference_style_copy(synthesis: SynthesisNetwork) -> SynthesisNetwork:
    """A copy of `synthesis` whose parameters are contiguous (the reference stores every weight so)."""
    copied = copy.deepcopy(synthesis)
    with torch.no_grad():
        for parameter in copied.parameters():
            parameter.data = parameter.data.contiguous()
    return copied


def reference_style_synthesis(synthesis: SynthesisNetwork, ws: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
    """Render W+ codes `ws` (N, num_ws, w_dim) with the reference's op sequence; `noise_mode` 'const' or 'none'."""
    if noise_mode not in ("const", "none"):
        raise ValueError(f"noise_mode must be 'const' or 'none', got {noise_mode!r}")
    x = img = None
    for block, block_ws in synthesis.blocks_with_ws(ws):
        x, img = _block(block, x, img, block_ws, noise_mode)
    return img


def _block(block: SynthesisBlock, x, img, ws: torch.Tensor, noise_mode: str):
    w_iter = iter(ws.unbind(dim=1))
    if block.in_channels == 0:
        x = block.const.unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
    else:
        x = _layer(block.conv0, x, next(w_iter), noise_mode)
    x = _layer(block.conv1, x, next(w_iter), noise_mode)
    if img is not None:
        img = _upfirdn2d(img, block.resample_filter, up=2, padding=[2, 1, 2, 1], gain=4)
    y = _torgb(block.torgb, x, next(w_iter))
    img = img.add_(y) if img is not None else y
    return x, img


def _layer(layer: SynthesisLayer, x: torch.Tensor, w: torch.Tensor, noise_mode: str) -> torch.Tensor:
    styles = layer.affine(w)
    noise = layer.noise_const * layer.noise_strength if layer.use_noise and noise_mode == "const" else None
    x = _modulated_conv2d(x, layer.weight, styles, noise, up=layer.up, padding=layer.padding,
                          resample_filter=layer.resample_filter, demodulate=True)
    return _bias_act(x, layer.bias, alpha=0.2, gain=layer.act_gain, clamp=layer.conv_clamp)


def _torgb(layer: ToRGBLayer, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    styles = layer.affine(w) * layer.weight_gain
    x = _modulated_conv2d(x, layer.weight, styles, None, up=1, padding=0, resample_filter=None, demodulate=False)
    return _bias_act(x, layer.bias, alpha=None, gain=1, clamp=layer.conv_clamp)


def _modulated_conv2d(x, weight, styles, noise, up: int, padding: int, resample_filter, demodulate: bool):
    batch_size = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    w = weight.unsqueeze(0) * styles.reshape(batch_size, 1, -1, 1, 1)
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
        w = w * dcoefs.reshape(batch_size, -1, 1, 1, 1)
    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, in_channels, kh, kw)
    if up == 1:
        x = F.conv2d(x, w, padding=padding, groups=batch_size)
    else:  # transposed convolution (no flip: the reference's up-sampling layers pass flip_weight=False), then FIR
        w = w.reshape(batch_size, -1, in_channels, kh, kw).transpose(1, 2).reshape(-1, out_channels, kh, kw)
        x = F.conv_transpose2d(x, w, stride=2, groups=batch_size)
        x = _upfirdn2d(x, resample_filter, up=1, padding=[1, 1, 1, 1], gain=4)
    x = x.reshape(batch_size, -1, *x.shape[2:])
    return x.add_(noise) if noise is not None else x


def _upfirdn2d(x: torch.Tensor, f: torch.Tensor, up: int, padding: list[int], gain: float) -> torch.Tensor:
    """Zero insertion by reshape and pad (a copy even for up=1, as in the reference), padding, then a depthwise
    convolution with the flipped 2-D filter."""
    batch_size, channels, height, width = x.shape
    x = x.reshape(batch_size, channels, height, 1, width, 1)
    x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
    x = x.reshape(batch_size, channels, height * up, width * up)
    x = F.pad(x, padding)
    f = (f * gain).flip([0, 1])  # a 2-D filter: gain ** (ndim / 2) == gain
    return F.conv2d(x, f[None, None].repeat(channels, 1, 1, 1), groups=channels)


def _bias_act(x: torch.Tensor, b: torch.Tensor, alpha: float | None, gain: float, clamp: float | None) -> torch.Tensor:
    x = x + b.reshape(1, -1, 1, 1)
    if alpha is not None:
        x = F.leaky_relu(x, alpha)
    if gain != 1:
        x = x * gain
    return x if clamp is None else x.clamp(-clamp, clamp)
