"""StyleGAN2(-ADA) generator (mapping + synthesis) with the reference implementation's parameter names.

A reference `G_ema` state dict loads with `load_state_dict(strict=True)`, and the outputs match the reference
implementation (equalised learning rate, truncation, modulated/demodulated convolutions, FIR up-sampling,
noise inputs, `skip` RGB architecture, `conv_clamp`, fp16 for the highest resolutions on CUDA).
"""
from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from pti.ops import bias_act, setup_filter, upsample2d
from pti.ops.bias_act import ACTIVATIONS
from pti.ops.conv2d_resample import conv2d_resample

NOISE_MODES = ("random", "const", "none")


class GeneratorConfigError(ValueError):
    """The generator's constructor arguments describe an architecture this implementation does not build."""


class GeneratorInputError(ValueError):
    """A generator input (latent, condition, W+ code, option) has the wrong shape or value."""


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale `x` to unit root-mean-square along `dim` (StyleGAN's pixel norm of the latent)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    noise: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    out_gain: float = 1,
    up: int = 1,
    padding: int = 0,
    resample_filter: torch.Tensor | None = None,
    demodulate: bool = True,
    flip_weight: bool = True,
    fused_modconv: bool | None = True,
) -> torch.Tensor:
    """StyleGAN2's modulated convolution: `(conv(x, weight * styles [/ demod]) + noise + bias) * out_gain`.

    `x` is (N, I, H, W), `weight` (O, I, k, k), `styles` (N, I), `noise` broadcastable to the output, `bias` (O).
    `fused_modconv=True` builds one weight per sample and convolves each sample with its own (one grouped
    convolution over the batch for contiguous `x`, one convolution per sample for channels-last `x`; bias
    included); False scales the activations before and after a shared convolution. Both compute the same
    function; None picks the cheaper: scaling the weights where they are smaller than the input activations.
    """
    batch_size = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    if fused_modconv is None:
        fused_modconv = x.shape[2] * x.shape[3] >= out_channels * kh * kw
    if x.dtype == torch.float16 and demodulate:  # pre-normalise (cancelled by demodulation) against fp16 overflow
        weight = weight * (1 / math.sqrt(in_channels * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)

    # Per-sample output scale [N, O]: the demodulation coefficients 1 / |weight * styles| (computed as a small
    # matrix product instead of from N modulated weight tensors), times out_gain.
    out_scale = None
    if demodulate:
        out_scale = (styles.square() @ _FilterSquaredNorms.apply(weight).t() + 1e-8).rsqrt() * out_gain
    if noise is not None and out_gain != 1:
        noise = noise * out_gain
    if bias is not None:
        bias = (bias * out_gain if out_gain != 1 else bias).to(x.dtype)

    if not fused_modconv:
        x = x * styles.to(x.dtype).reshape(batch_size, -1, 1, 1)
        x = conv2d_resample(x, weight.to(x.dtype), resample_filter, up=up, padding=padding, flip_weight=flip_weight)
        if out_scale is None and out_gain != 1:
            out_scale = x.new_full([batch_size, out_channels], out_gain)
        if out_scale is not None and noise is not None:
            x = torch.addcmul(noise.to(x.dtype), x, out_scale.to(x.dtype).reshape(batch_size, -1, 1, 1))
        elif out_scale is not None:
            x = x * out_scale.to(x.dtype).reshape(batch_size, -1, 1, 1)
        elif noise is not None:
            x = x.add_(noise.to(x.dtype))
        return x if bias is None else x.add_(bias.reshape(1, -1, 1, 1))

    if out_scale is not None:
        scale = styles.unsqueeze(1) * out_scale.unsqueeze(2)  # [N, O, I]
    else:
        scale = (styles * out_gain).unsqueeze(1)  # [N, 1, I]
    scale = scale.reshape(*scale.shape, 1, 1)
    grouped = batch_size > 1 and x.is_contiguous()
    # A product takes the memory order of its first factor: the weight's own for per-sample convolutions (an
    # up-sampling weight is stored (in, out), as its transposed convolution reads it), (N, O, I) for a grouped one.
    w = scale * weight.unsqueeze(0) if grouped else weight.unsqueeze(0) * scale  # [N, O, I, k, k]
    if kh == kw == 1 and up == 1 and padding == 0:  # 1x1 (ToRGB): matrix products are faster
        y = _pointwise_conv(x, w.reshape(batch_size, out_channels, in_channels).to(x.dtype), bias)
        return y if noise is None else y.add_(noise.to(x.dtype))
    w = w.to(x.dtype)
    if batch_size > 1 and not grouped:  # channels-last (the CPU): one convolution per sample keeps the
        # layout, where a grouped convolution over the batch would first copy everything to contiguous memory
        # (split, not indexing: its gradient is one concatenation, not a zero-filled batch per sample)
        x = torch.cat([conv2d_resample(sample, weight_i, resample_filter, up=up, padding=padding,
                                       flip_weight=flip_weight, bias=bias) for sample, weight_i in zip(x.split(1), w)])
    elif grouped:  # the batch becomes the groups of one grouped convolution
        x = conv2d_resample(x.reshape(1, -1, *x.shape[2:]), w.reshape(-1, in_channels, kh, kw), resample_filter,
                            up=up, padding=padding, groups=batch_size, flip_weight=flip_weight,
                            bias=None if bias is None else bias.repeat(batch_size))
        x = x.reshape(batch_size, -1, *x.shape[2:])
    else:
        x = conv2d_resample(x, w[0], resample_filter, up=up, padding=padding, flip_weight=flip_weight, bias=bias)
    if noise is not None:
        x = x.add_(noise.to(x.dtype))
    return x


class _FilterSquaredNorms(torch.autograd.Function):
    """Sum of squares of every filter of a conv weight, (O, I, k, k) -> (O, I): a square and a matrix-vector product
    forward (a reduction over the 9 taps takes 1.3x as long here, a batched dot product 2x) and one pass backward
    (autograd of the plain formula makes three). A weight stored (I, O, k, k) in memory is read in that order."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor) -> torch.Tensor:  # noqa: D102 - autograd protocol
        ctx.save_for_backward(weight)
        stored_transposed = not weight.is_contiguous() and weight.transpose(0, 1).is_contiguous()
        filters = weight.transpose(0, 1) if stored_transposed else weight
        taps = weight.shape[2] * weight.shape[3]
        norms = (filters.reshape(-1, taps).square() @ weight.new_ones(taps)).reshape(filters.shape[:2])
        return norms.t() if stored_transposed else norms

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102 - autograd protocol
        (weight,) = ctx.saved_tensors
        return weight * (2 * grad)[:, :, None, None]


def _pointwise_conv(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Per-sample 1x1 convolution of `x` (N, I, H, W) with `w` (N, O, I), plus `bias` (O), as matrix products over
    the pixels; works without a copy on contiguous and on channels-last `x` (and keeps its format)."""
    n, _, h, width = x.shape
    if x.is_contiguous():
        x_flat = x.reshape(n, -1, h * width)  # (N, I, HW)
        y = torch.bmm(w, x_flat) if bias is None else torch.baddbmm(bias.reshape(1, -1, 1), w, x_flat)
        return y.reshape(n, -1, h, width)
    # Channels-last: one plain matrix product per sample, (HW, I) @ (I, O) on a view of its memory; about twice as
    # fast as a batched product here, forward and backward (whose inner dimension, O = 3, a bmm handles poorly).
    pixels = x.permute(0, 2, 3, 1)  # (N, H, W, I): a view of channels-last memory
    samples = [pixels] if n == 1 else pixels.split(1)  # (a split of one would copy its gradient)
    products = [sample.reshape(h * width, -1) @ w_i.t() if bias is None
                else torch.addmm(bias, sample.reshape(h * width, -1), w_i.t())
                for sample, w_i in zip(samples, w)]
    y = products[0].unsqueeze(0) if n == 1 else torch.stack(products)
    return y.reshape(n, h, width, -1).permute(0, 3, 1, 2)


class FullyConnectedLayer(nn.Module):
    """Linear layer with equalised learning rate (weights scaled at run time) and a fused activation."""

    def __init__(
        self,
        in_features: int,  # input width
        out_features: int,  # output width
        bias: bool = True,  # learn a bias
        activation: str = "linear",  # activation name (see pti.ops.bias_act.ACTIVATIONS)
        lr_multiplier: float = 1,  # learning-rate multiplier of this layer
        bias_init: float = 0,  # initial bias value
    ):
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the layer to `x` (N, in_features)."""
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, act=self.activation)


class MappingNetwork(nn.Module):
    """z (+ condition c) -> w, broadcast to W+ (N, num_ws, w_dim), with truncation towards `w_avg`."""

    def __init__(
        self,
        z_dim: int,  # latent z width (0 = no latent)
        c_dim: int,  # condition width (0 = unconditional)
        w_dim: int,  # intermediate latent w width
        num_ws: int,  # number of W+ layers to broadcast to
        num_layers: int = 8,  # number of fully-connected layers
        embed_features: int | None = None,  # width of the condition embedding (default w_dim)
        layer_features: int | None = None,  # width of the hidden layers (default w_dim)
        activation: str = "lrelu",  # activation of the hidden layers
        lr_multiplier: float = 0.01,  # learning-rate multiplier of the mapping layers
        w_avg_beta: float | None = 0.995,  # EMA decay used in training to track w_avg; None = no w_avg buffer
    ):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws, self.num_layers = z_dim, c_dim, w_dim, num_ws, num_layers
        self.w_avg_beta = w_avg_beta
        if z_dim == 0 and c_dim == 0:
            raise GeneratorConfigError("the mapping network needs z_dim > 0 or c_dim > 0")
        embed_features = w_dim if embed_features is None else embed_features
        embed_features = 0 if c_dim == 0 else embed_features
        layer_features = w_dim if layer_features is None else layer_features
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(features[idx], features[idx + 1], activation=activation, lr_multiplier=lr_multiplier)
            setattr(self, f"fc{idx}", layer)
        if w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(
        self,
        z: torch.Tensor | None,
        c: torch.Tensor | None,
        truncation_psi: float = 1,
        truncation_cutoff: int | None = None,
    ) -> torch.Tensor:
        """Map z (N, z_dim) and c (N, c_dim) to W+ (N, num_ws, w_dim); truncate the first `truncation_cutoff` layers."""
        x = None
        if self.z_dim > 0:
            if z is None or z.ndim != 2 or z.shape[1] != self.z_dim:
                raise GeneratorInputError(f"z must have shape (N, {self.z_dim}), got {_shape(z)}")
            x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            if c is None or c.ndim != 2 or c.shape[1] != self.c_dim:
                raise GeneratorInputError(f"c must have shape (N, {self.c_dim}), got {_shape(c)}")
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1) if x is not None else y
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            if self.w_avg_beta is None:
                raise GeneratorInputError("truncation needs w_avg, but this mapping network has none (w_avg_beta=None)")
            truncated = self.w_avg.lerp(x, truncation_psi)
            if truncation_cutoff is None:
                x = truncated
            else:
                x = torch.cat([truncated[:, :truncation_cutoff], x[:, truncation_cutoff:]], dim=1)
        return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution (optionally up-sampling x2), noise input, bias and activation."""

    def __init__(
        self,
        in_channels: int,  # input channels
        out_channels: int,  # output channels
        w_dim: int,  # w width (input of the style affine)
        resolution: int,  # output resolution
        kernel_size: int = 3,  # convolution kernel size
        up: int = 1,  # up-sampling factor (1 or 2)
        use_noise: bool = True,  # add per-pixel noise
        activation: str = "lrelu",  # activation name
        resample_filter: Sequence[float] = (1, 3, 3, 1),  # low-pass filter for up-sampling
        conv_clamp: float | None = None,  # clamp the output to +-conv_clamp (None = off)
        channels_last: bool = False,  # use channels-last memory format
    ):
        super().__init__()
        self.resolution, self.up, self.use_noise, self.activation = resolution, up, use_noise, activation
        self.conv_clamp = conv_clamp
        self.padding = kernel_size // 2
        self.act_gain = ACTIVATIONS[activation].default_gain
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size])
        if channels_last:
            weight = weight.to(memory_format=torch.channels_last)
        elif up > 1:  # stored (in, out, k, k): the transposed convolution takes its weight so, with no copy per call
            weight = weight.transpose(0, 1).contiguous().transpose(0, 1)
        self.weight = nn.Parameter(weight)
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random", fused_modconv: bool | None = True,
                style_offset: torch.Tensor | None = None):
        """Apply the layer to `x` (N, in, H, W) with style input `w` (N, w_dim); `style_offset` (N or 1, in) is added
        to the affine's output (the layer's StyleSpace code `s`)."""
        styles = self.affine(w)
        if style_offset is not None:
            styles = styles + style_offset
        noise = None
        if self.use_noise and noise_mode == "random":
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device)
            noise = noise * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        x = modulated_conv2d(
            x, self.weight, styles, noise=noise, bias=self.bias, out_gain=self.act_gain, up=self.up,
            padding=self.padding, resample_filter=self.resample_filter, flip_weight=(self.up == 1),
            fused_modconv=fused_modconv,
        )  # the activation's gain is applied here (act(v) * gain == act(v * gain) for these activations)
        return bias_act(x, act=self.activation, gain=1, clamp=self.conv_clamp, inplace=True)


class ToRGBLayer(nn.Module):
    """Modulated (not demodulated) 1x1 convolution to RGB, plus bias."""

    def __init__(
        self,
        in_channels: int,  # input channels
        out_channels: int,  # image channels
        w_dim: int,  # w width
        kernel_size: int = 1,  # convolution kernel size
        conv_clamp: float | None = None,  # clamp the output to +-conv_clamp (None = off)
        channels_last: bool = False,  # use channels-last memory format
    ):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(
            memory_format=memory_format))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size * kernel_size)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused_modconv: bool | None = True) -> torch.Tensor:
        """Turn features `x` into an RGB image contribution, styled by `w`."""
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, bias=self.bias, demodulate=False, fused_modconv=fused_modconv)
        return x if self.conv_clamp is None else bias_act(x, clamp=self.conv_clamp, inplace=True)


class SynthesisBlock(nn.Module):
    """One resolution of the synthesis network: (up-sampling) conv0, conv1 and the skip ToRGB."""

    def __init__(
        self,
        in_channels: int,  # input channels (0 = the first block, which starts from a learned constant)
        out_channels: int,  # output channels
        w_dim: int,  # w width
        resolution: int,  # resolution of this block
        img_channels: int,  # output image channels
        is_last: bool,  # the last (highest-resolution) block
        architecture: str = "skip",  # only 'skip' (the FFHQ configuration) is built
        resample_filter: Sequence[float] = (1, 3, 3, 1),  # low-pass filter for up-sampling
        conv_clamp: float | None = None,  # clamp convolution outputs to +-conv_clamp (None = off)
        use_fp16: bool = False,  # compute this block in float16 on CUDA
        fp16_channels_last: bool = False,  # use channels-last memory format with fp16
        **layer_kwargs,  # further SynthesisLayer arguments (kernel_size, use_noise, activation)
    ):
        super().__init__()
        if architecture != "skip":
            raise GeneratorConfigError(f"only the 'skip' synthesis architecture is supported, got {architecture!r}")
        self.in_channels, self.w_dim, self.resolution, self.img_channels = in_channels, w_dim, resolution, img_channels
        self.is_last, self.use_fp16 = is_last, use_fp16
        self.channels_last = use_fp16 and fp16_channels_last
        # On the CPU, channels-last where the feature maps outweigh a 3x3 conv's weights: oneDNN runs those
        # (transposed, up-sampling ones above all) convolutions 2-3x faster in that layout, while the small
        # low-resolution maps stay contiguous, which spares reordering their large weights at every step.
        self.cpu_channels_last = resolution * resolution >= out_channels * 3 * 3
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.num_conv = 0
        self.num_torgb = 0
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim=w_dim, resolution=resolution, up=2,
                                        resample_filter=resample_filter, conv_clamp=conv_clamp,
                                        channels_last=self.channels_last, **layer_kwargs)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim=w_dim, resolution=resolution,
                                    resample_filter=resample_filter, conv_clamp=conv_clamp,
                                    channels_last=self.channels_last, **layer_kwargs)
        self.num_conv += 1
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp,
                                channels_last=self.channels_last)
        self.num_torgb += 1

    def forward(
        self,
        x: torch.Tensor | None,
        img: torch.Tensor | None,
        ws: torch.Tensor,
        noise_mode: str = "random",
        force_fp32: bool = False,
        fused_modconv: bool | None = None,
        style_offsets: Sequence[torch.Tensor | None] | None = None,  # one per conv layer of the block, or None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the block on features `x` and image `img` from the previous block with its slice of W+ `ws`."""
        w_iter = iter(ws.unbind(dim=1))
        offsets = iter(style_offsets) if style_offsets is not None else itertools.repeat(None)
        on_cuda = ws.device.type == "cuda"
        use_fp16 = self.use_fp16 and not force_fp32 and on_cuda
        dtype = torch.float16 if use_fp16 else torch.float32
        channels_last = self.channels_last and use_fp16 if on_cuda else self.cpu_channels_last
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if fused_modconv is None and on_cuda:  # the reference's choice; on the CPU each layer picks the cheaper
            fused_modconv = (not self.training) and (dtype == torch.float32 or ws.shape[0] == 1)

        if self.in_channels == 0:
            x = self.const.to(dtype=dtype).unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
            x = x.to(memory_format=memory_format)
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv,
                           style_offset=next(offsets))
        else:
            x = x.to(dtype=dtype, memory_format=memory_format)
            x = self.conv0(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv,
                           style_offset=next(offsets))
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv,
                           style_offset=next(offsets))

        if img is not None:
            img = upsample2d(img, self.resample_filter)
        y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv)
        y = y.to(dtype=torch.float32, memory_format=torch.contiguous_format)
        img = img.add_(y) if img is not None else y
        return x, img


class SynthesisNetwork(nn.Module):
    """W+ (N, num_ws, w_dim) -> image (N, img_channels, R, R), one SynthesisBlock per resolution 4..R."""

    def __init__(
        self,
        w_dim: int,  # w width
        img_resolution: int,  # output resolution (a power of two >= 4)
        img_channels: int,  # output image channels
        channel_base: int = 32768,  # channels of a block = min(channel_base // resolution, channel_max)
        channel_max: int = 512,  # maximum number of channels of any block
        num_fp16_res: int = 0,  # compute the highest `num_fp16_res` resolutions in float16 (CUDA only)
        **block_kwargs,  # further SynthesisBlock / SynthesisLayer arguments
    ):
        super().__init__()
        if img_resolution < 4 or img_resolution & (img_resolution - 1) != 0:
            raise GeneratorConfigError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        log2_res = int(math.log2(img_resolution))
        self.block_resolutions = [2**i for i in range(2, log2_res + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        fp16_resolution = max(2 ** (log2_res + 1 - num_fp16_res), 8)
        self.num_ws = 0
        for res in self.block_resolutions:
            block = SynthesisBlock(
                channels[res // 2] if res > 4 else 0, channels[res], w_dim=w_dim, resolution=res,
                img_channels=img_channels, is_last=(res == img_resolution), use_fp16=(res >= fp16_resolution),
                **block_kwargs,
            )
            self.num_ws += block.num_conv
            setattr(self, f"b{res}", block)
        self.num_ws += block.num_torgb

    def forward(
        self,
        ws: torch.Tensor,
        noise_mode: str = "random",
        force_fp32: bool = False,
        fused_modconv: bool | None = None,
        style_offsets: Sequence[torch.Tensor | None] | None = None,  # StyleSpace offsets, see below
    ) -> torch.Tensor:
        """Render W+ codes `ws` (N, num_ws, w_dim) to images (N, C, R, R), float32, about [-1, 1].

        `style_offsets`: one entry per conv layer (`style_layers()`, lowest resolution first; the ToRGB layers have
        none), each None or a tensor (C,) or (N, C) added to that layer's style `s = affine(w)`: the W+ code goes
        through the affines first, then the offsets are added (StyleSpace edits on top of W / W+ edits).
        """
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise GeneratorInputError(f"ws must have shape (N, {self.num_ws}, {self.w_dim}), got {_shape(ws)}")
        if noise_mode not in NOISE_MODES:
            raise GeneratorInputError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        offsets = None if style_offsets is None else self._checked_offsets(style_offsets, ws)
        x = img = None
        first = 0
        for block, block_ws in self.blocks_with_ws(ws.to(torch.float32)):
            block_offsets = None if offsets is None else offsets[first:first + block.num_conv]
            first += block.num_conv
            x, img = block(x, img, block_ws, noise_mode=noise_mode, force_fp32=force_fp32, fused_modconv=fused_modconv,
                           style_offsets=block_offsets)
        return img

    def style_layers(self) -> tuple[tuple[str, SynthesisLayer], ...]:
        """The conv layers whose styles form StyleSpace, lowest resolution first, with their names ('b4.conv1',
        'b8.conv0', ...); the ToRGB layers are not among them. Layer i takes its w from W+ layer i."""
        layers = []
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            layers += [(f"b{res}.{name}", getattr(block, name)) for name in ("conv0", "conv1") if hasattr(block, name)]
        return tuple(layers)

    def style_channels(self) -> tuple[int, ...]:
        """Channels of each StyleSpace layer (its input channels), in `style_layers()` order."""
        return tuple(layer.affine.weight.shape[0] for _, layer in self.style_layers())

    def styles(self, ws: torch.Tensor) -> list[torch.Tensor]:
        """The StyleSpace code of W+ codes `ws` (N, num_ws, w_dim): each conv layer's affine output (N, C)."""
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise GeneratorInputError(f"ws must have shape (N, {self.num_ws}, {self.w_dim}), got {_shape(ws)}")
        styles = []
        for block, block_ws in self.blocks_with_ws(ws.to(torch.float32)):
            convs = [getattr(block, name) for name in ("conv0", "conv1") if hasattr(block, name)]
            styles += [layer.affine(w) for layer, w in zip(convs, block_ws.unbind(dim=1))]
        return styles

    def _checked_offsets(self, style_offsets: Sequence[torch.Tensor | None], ws: torch.Tensor) -> list:
        """The offsets as float32 tensors on `ws`'s device, each checked against its layer's channels."""
        channels = self.style_channels()
        if len(style_offsets) != len(channels):
            raise GeneratorInputError(f"style_offsets needs one entry per conv layer ({len(channels)}), "
                                      f"got {len(style_offsets)}")
        checked = []
        for index, (offset, count) in enumerate(zip(style_offsets, channels)):
            if offset is not None:
                if not isinstance(offset, torch.Tensor) or offset.shape not in ((count,), (ws.shape[0], count)):
                    raise GeneratorInputError(f"style_offsets[{index}] must have shape ({count},) or "
                                              f"({ws.shape[0]}, {count}), got {_shape(offset)}")
                offset = offset.to(device=ws.device, dtype=torch.float32)
            checked.append(offset)
        return checked

    def blocks_with_ws(self, ws: torch.Tensor) -> Iterator[tuple[SynthesisBlock, torch.Tensor]]:
        """Each block, lowest resolution first, with its slice of `ws`: one w per conv layer and the next for its
        ToRGB (which the next block's first conv shares)."""
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            yield block, ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            w_idx += block.num_conv


class Generator(nn.Module):
    """StyleGAN2(-ADA) generator: `mapping` (z, c -> W+) followed by `synthesis` (W+ -> image)."""

    def __init__(
        self,
        z_dim: int,  # latent z width
        c_dim: int,  # condition width (0 = unconditional)
        w_dim: int,  # intermediate latent w width
        img_resolution: int,  # output resolution
        img_channels: int,  # output image channels
        mapping_kwargs: dict | None = None,  # MappingNetwork arguments
        synthesis_kwargs: dict | None = None,  # SynthesisNetwork arguments
    ):
        super().__init__()
        mapping_kwargs = copy.deepcopy(dict(mapping_kwargs or {}))
        synthesis_kwargs = copy.deepcopy(dict(synthesis_kwargs or {}))
        self.init_kwargs = {
            "z_dim": z_dim, "c_dim": c_dim, "w_dim": w_dim, "img_resolution": img_resolution,
            "img_channels": img_channels, "mapping_kwargs": copy.deepcopy(mapping_kwargs),
            "synthesis_kwargs": copy.deepcopy(synthesis_kwargs),
        }
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        try:
            self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                                              **synthesis_kwargs)
            self.num_ws = self.synthesis.num_ws
            self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **mapping_kwargs)
        except TypeError as error:  # an unknown keyword in mapping_kwargs / synthesis_kwargs
            raise GeneratorConfigError(f"unsupported generator argument: {error}") from error

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None,
        truncation_psi: float = 1,
        truncation_cutoff: int | None = None,
        noise_mode: str = "random",
        force_fp32: bool = False,
        fused_modconv: bool | None = None,
    ) -> torch.Tensor:
        """Generate images (N, C, R, R) from latents `z` (N, z_dim) and conditions `c` (N, c_dim or None)."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode, force_fp32=force_fp32, fused_modconv=fused_modconv)


def _shape(t: torch.Tensor | None) -> str:
    """Shape of `t` for error messages."""
    return "None" if t is None else str(tuple(t.shape))
