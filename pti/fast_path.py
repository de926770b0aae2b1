"""The speed switches of PTI on the GPU in one place: what the fast path turns on, applied to a run and undone after.

A run is made fast in three ways, each from here:
- its configuration (`apply_to_config`): fp16 in the generator's highest-resolution blocks, smaller LPIPS inputs;
- its generator (`prepare_generator`): channels-last memory format in the fp16 blocks;
- torch's process-wide backend flags, for the duration of a `with speed_context(settings):` block: the op
  implementation (fused CUDA ops or the pure-PyTorch references), TF32 tensor cores, cuDNN autotuning.
`FAST_SETTINGS` keeps the method of the paper and the official code (the same function, computed faster);
`APPROXIMATE_SETTINGS` also turns on the two switches that change it (fp16 layers, tuning LPIPS at 256 px), opt-in.
Nothing here runs at import time, and `speed_context` restores every flag it touched when the block exits.
On the CPU every switch but the LPIPS size is a no-op (fp16 layers, TF32, cuDNN and the CUDA ops are CUDA-only).
"""
from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch

from pti.config import PTIConfig
from pti.ops.cuda_plugin import IMPL_ENV_VAR

OpsImpl = Literal["auto", "ref"]


class SpeedSettingsError(ValueError):
    """A speed setting has the wrong type or value."""


@dataclass(frozen=True)
class SpeedSettings:
    """Speed switches of a PTI run; the defaults are the faithful fast path, `REFERENCE_SETTINGS` the plain one."""

    ops_impl: OpsImpl = "auto"  # 'auto': fused CUDA ops on CUDA tensors, references elsewhere; 'ref': references
    fp16_layers: bool = False  # float16 in the generator's num_fp16_res top resolutions (conv_clamp on); CUDA;
    # not in the paper nor the official code (it renders in float32): changes the method
    tf32: bool = True  # TF32 tensor cores for float32 matrix products and convolutions (CUDA)
    cudnn_benchmark: bool = True  # cuDNN autotunes the convolution algorithm per shape (the steps have fixed shapes)
    tuning_lpips_resolution: int | None = None  # tuning LPIPS (and its early stop) on images area-downsampled to
    # this; None: the config's (full resolution, as the official code); a size changes the method
    channels_last: bool = False  # channels-last memory format in the fp16 blocks (CUDA; the CPU picks per block)

    def __post_init__(self) -> None:
        if self.ops_impl not in ("auto", "ref"):
            raise SpeedSettingsError(f"SpeedSettings.ops_impl must be 'auto' or 'ref', got {self.ops_impl!r}")
        for name in ("fp16_layers", "tf32", "cudnn_benchmark", "channels_last"):
            if not isinstance(getattr(self, name), bool):
                raise SpeedSettingsError(f"SpeedSettings.{name} must be True or False, got {getattr(self, name)!r}")
        size = self.tuning_lpips_resolution
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 16):
            raise SpeedSettingsError(f"SpeedSettings.tuning_lpips_resolution must be None or an integer >= 16, "
                                     f"got {size!r}")

    @property
    def force_fp32(self) -> bool:
        """The generator's `force_fp32` argument under these settings (for renders outside the PTI loops)."""
        return not self.fp16_layers


FAST_SETTINGS = SpeedSettings()
"""The faithful fast path: fused CUDA ops, TF32, cuDNN autotuning; float32 layers, full-resolution tuning LPIPS."""

APPROXIMATE_SETTINGS = SpeedSettings(fp16_layers=True, tuning_lpips_resolution=256)
"""The fast path plus the two departures from the method (opt-in): fp16 layers, tuning LPIPS at 256 px."""

REFERENCE_SETTINGS = SpeedSettings(ops_impl="ref", fp16_layers=False, tf32=False, cudnn_benchmark=False,
                                   tuning_lpips_resolution=None, channels_last=False)
"""The plain reference path: pure-PyTorch ops, float32 everywhere without TF32, the configuration's LPIPS sizes."""


def apply_to_config(config: PTIConfig, settings: SpeedSettings) -> PTIConfig:
    """`config` with the settings' precision (both phases) and tuning LPIPS size; everything else unchanged."""
    projection = dataclasses.replace(config.projection, force_fp32=settings.force_fp32)
    tuning = dataclasses.replace(config.tuning, force_fp32=settings.force_fp32)
    if settings.tuning_lpips_resolution is not None:
        tuning = dataclasses.replace(tuning, lpips_resolution=settings.tuning_lpips_resolution)
    return PTIConfig(projection=projection, tuning=tuning)


def prepare_generator(G: torch.nn.Module, settings: SpeedSettings) -> torch.nn.Module:
    """`G` itself when the settings leave it as it is; else a copy with channels-last fp16 blocks (G untouched)."""
    if not settings.channels_last:
        return G
    G = copy.deepcopy(G)
    for block in G.synthesis.children():
        if getattr(block, "use_fp16", False):
            block.channels_last = True
            for layer in block.modules():
                weight = getattr(layer, "weight", None)
                if isinstance(weight, torch.nn.Parameter) and weight.ndim == 4:
                    weight.data = weight.data.contiguous(memory_format=torch.channels_last)
    return G


def _uses_precision_api() -> bool:
    """Whether torch has the `fp32_precision` flags (2.9+), which replace (and must not be mixed with) allow_tf32."""
    return hasattr(torch.backends.cuda.matmul, "fp32_precision") and hasattr(torch.backends.cudnn, "conv")


def _tf32_flags() -> tuple[object, object]:
    """The current (matmul, convolution) TF32 flags, in whichever API this torch uses."""
    if _uses_precision_api():
        return torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


def _set_tf32_flags(matmul: object, conv: object) -> None:
    """Set the (matmul, convolution) TF32 flags as returned by `_tf32_flags`."""
    if _uses_precision_api():
        torch.backends.cuda.matmul.fp32_precision = matmul
        torch.backends.cudnn.conv.fp32_precision = conv
    else:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = conv


def tf32_enabled() -> bool:
    """Whether float32 matrix products and convolutions may use TF32 tensor cores right now."""
    matmul, conv = _tf32_flags()
    if _uses_precision_api():
        return matmul == "tf32" and conv == "tf32"
    return bool(matmul) and bool(conv)


def backend_state() -> dict[str, object]:
    """The process-wide flags `speed_context` manages, as they are now (for logs and benchmark reports)."""
    matmul, conv = _tf32_flags()
    return {"ops_impl_env": os.environ.get(IMPL_ENV_VAR), "tf32_matmul": matmul, "tf32_conv": conv,
            "cudnn_benchmark": torch.backends.cudnn.benchmark}


@contextmanager
def speed_context(settings: SpeedSettings) -> Iterator[SpeedSettings]:
    """Set the process-wide flags of `settings` (op implementation, TF32, cuDNN autotuning); restore them on exit.

    The flags are global to the process: do not run two PTI jobs with different settings concurrently.
    """
    saved_env = os.environ.get(IMPL_ENV_VAR)
    saved_tf32 = _tf32_flags()
    saved_benchmark = torch.backends.cudnn.benchmark
    try:
        if settings.ops_impl == "ref":
            os.environ[IMPL_ENV_VAR] = "ref"
        else:
            os.environ.pop(IMPL_ENV_VAR, None)  # 'auto': the fast path must not be forced onto the references
        if _uses_precision_api():
            precision = "tf32" if settings.tf32 else "ieee"
            _set_tf32_flags(precision, precision)
        else:
            _set_tf32_flags(settings.tf32, settings.tf32)
        torch.backends.cudnn.benchmark = settings.cudnn_benchmark
        yield settings
    finally:
        if saved_env is None:
            os.environ.pop(IMPL_ENV_VAR, None)
        else:
            os.environ[IMPL_ENV_VAR] = saved_env
        _set_tf32_flags(*saved_tf32)
        torch.backends.cudnn.benchmark = saved_benchmark
