"""Choosing an op implementation and building the CUDA plugin lazily (on first CUDA use, never at import)."""
from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path
from types import ModuleType

import torch

IMPL_ENV_VAR = "PTI_OPS_IMPL"
"""Environment variable: set it to `ref` to force the pure-PyTorch reference ops everywhere."""

_SOURCES_DIR = Path(__file__).parent / "cuda"
_SOURCE_FILES = ("ops.cpp", "bias_act.cu", "upfirdn2d.cu")
_EXTENSION_NAME = "pti_ops_cuda_v1"


class OpsImplError(ValueError):
    """An op was asked for an implementation that does not exist or cannot run on the given tensor."""


def reference_forced() -> bool:
    """True when the environment variable `PTI_OPS_IMPL=ref` forces the reference implementation."""
    return os.environ.get(IMPL_ENV_VAR, "").strip().lower() == "ref"


@functools.lru_cache(maxsize=None)
def load_cuda_extension() -> ModuleType | None:
    """Compile (ninja, cached in the torch extensions dir) and import the CUDA plugin; None, warned once, on failure."""
    from torch.utils import cpp_extension

    try:
        return cpp_extension.load(
            name=_EXTENSION_NAME,
            sources=[str(_SOURCES_DIR / name) for name in _SOURCE_FILES],
            extra_cflags=["-O3"],
            extra_cuda_cflags=["-O3", "--use_fast_math"],
            verbose=False,
        )
    except Exception as error:  # noqa: BLE001 - any build/import failure means: use the reference ops
        warnings.warn(
            f"Could not build the CUDA ops plugin ({type(error).__name__}: {error}); "
            "falling back to the pure-PyTorch reference ops (slower).",
            RuntimeWarning,
            stacklevel=2,
        )
        return None


def select_impl(impl: str, x: torch.Tensor) -> str:
    """Resolve `impl` ('auto' | 'ref' | 'cuda') for tensor `x` to 'ref' or 'cuda'."""
    if impl not in ("auto", "ref", "cuda"):
        raise OpsImplError(f"impl must be 'auto', 'ref' or 'cuda', got {impl!r}")
    if impl == "ref" or reference_forced():
        return "ref"
    if impl == "cuda":
        if x.device.type != "cuda":
            raise OpsImplError(f"impl='cuda' needs a CUDA tensor, got one on {x.device}")
        if load_cuda_extension() is None:
            raise OpsImplError("impl='cuda' was asked for but the CUDA ops plugin could not be built (see warning)")
        return "cuda"
    if x.device.type == "cuda" and not torch.compiler.is_compiling() and load_cuda_extension() is not None:
        return "cuda"
    return "ref"
