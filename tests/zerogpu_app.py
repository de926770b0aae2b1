"""`app.py` under the real `spaces` package in ZeroGPU mode, on a machine without a GPU (tests only).

Run as `python tests/zerogpu_app.py <app.py flags>` with SPACES_ZERO_GPU=true, SPACES_ZERO_DEVICE_API_URL and
ZEROGPU_OFFLOAD_DIR set. Everything of `spaces` stays real (torch patched in the main process, the forked worker,
the pickling of arguments and results both ways, scheduling, allow and release through the device API) except the
worker's two CUDA touches, which need a GPU:
- `spaces.zero.torch.init` (`torch.Tensor([0]).cuda()`): here it only sets CUDA_VISIBLE_DEVICES, as the real one does;
- `spaces.zero.torch.move` (moves the main process's fake-`cuda` tensors to the GPU): here it fails if there is
  anything to move, because the app must not make CUDA tensors outside a GPU function.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import spaces  # noqa: F401 - first, as on a Space: patches torch before anything touches CUDA
import spaces.zero.torch as zero_torch


def init_without_gpu(nvidia_uuid: str) -> None:
    """The worker's CUDA initialisation, less the CUDA tensor."""
    os.environ["CUDA_VISIBLE_DEVICES"] = nvidia_uuid


def move_nothing(callback=None) -> None:
    """The worker's move of fake-`cuda` tensors to the GPU: there must be none."""
    if zero_torch.size() > 0:
        raise RuntimeError(f"the main process made {zero_torch.size()} bytes of CUDA tensors outside a GPU function")


zero_torch.init = init_without_gpu
zero_torch.move = move_nothing

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import app  # noqa: E402 - after spaces, as on a Space

if __name__ == "__main__":
    app.main(sys.argv[1:])
