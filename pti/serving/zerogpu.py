"""ZeroGPU detection, the GPU-call decorator, and the device a GPU call computes on."""
from __future__ import annotations

import importlib
import importlib.util
import os
from typing import Callable, TypeVar

import torch

F = TypeVar("F", bound=Callable)

# The environment variable that a ZeroGPU Space sets (read by the `spaces` package the same way).
ZEROGPU_ENV_VAR = "SPACES_ZERO_GPU"


def on_zerogpu() -> bool:
    """Whether this process serves on ZeroGPU: SPACES_ZERO_GPU true (as on such a Space) and `spaces` installed."""
    flag = os.environ.get(ZEROGPU_ENV_VAR, "").strip().lower() in ("1", "t", "true")
    return flag and importlib.util.find_spec("spaces") is not None


def gpu_task(duration: int | Callable[..., int]) -> Callable[[F], F]:
    """Decorate a module-level GPU function: `spaces.GPU(duration=...)` on ZeroGPU, else the function unchanged.

    `duration` is seconds, or a function of the decorated function's arguments returning seconds. On ZeroGPU the
    function runs in a forked worker: its arguments and results must pickle (no locks, lambdas, open files).
    """
    if not on_zerogpu():
        return lambda function: function
    spaces = importlib.import_module("spaces")
    return spaces.GPU(duration=duration)


def fork_safe_cpu_threads() -> None:
    """On ZeroGPU, run this thread's CPU ops on one thread. The GPU worker is forked from the app's process, and a
    child forked after its parent ran an OpenMP parallel region hangs at its first own one (GNU libgomp is not
    fork-safe: docs/upstream/torch-openmp-fork.md). The worker computes on the GPU, so one CPU thread costs little.
    Call it first in every thread of a GPU function that runs torch ops; elsewhere it does nothing."""
    if on_zerogpu() and torch.backends.openmp.is_available():
        torch.set_num_threads(1)


def gpu_call_device(holding_device: torch.device) -> torch.device:
    """The device a GPU function computes on: on ZeroGPU the worker's GPU (the CPU where CUDA is not usable there,
    as in tests), elsewhere the device the models are held on."""
    if not on_zerogpu():
        return holding_device
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
