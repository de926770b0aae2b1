"""The optional ZeroGPU decorator: `spaces.GPU` when the `spaces` package is installed, otherwise a no-op."""
from __future__ import annotations

import importlib
import importlib.util
import math
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)

# Seconds one optimisation step (forward + backward at 1024 px, LPIPS included) may take on a ZeroGPU slice,
# with margin: the design budget is ~19 ms per step on an H100 (800 steps in 15 s); 3x covers slower GPUs.
SECONDS_PER_STEP = 0.06
# Seconds for moving weights to the GPU, loading LPIPS and returning the tuned weights to the CPU.
OVERHEAD_SECONDS = 15
# The longest a ZeroGPU call may ask for.
MAX_SECONDS = 300


def gpu_seconds(projection_steps: int, tuning_steps: int, *, seconds_per_step: float = SECONDS_PER_STEP,
                overhead_seconds: float = OVERHEAD_SECONDS, max_seconds: int = MAX_SECONDS) -> int:
    """GPU time to ask for a PTI run of the given step counts: overhead + steps x seconds per step, capped."""
    if projection_steps < 0 or tuning_steps < 0:
        raise ValueError(f"step counts must be non-negative, got {projection_steps} and {tuning_steps}")
    return min(max_seconds, math.ceil(overhead_seconds + (projection_steps + tuning_steps) * seconds_per_step))


def spaces_available() -> bool:
    """Whether the Hugging Face `spaces` package (ZeroGPU) can be imported."""
    return importlib.util.find_spec("spaces") is not None


def gpu_task(duration: int | Callable[..., int]) -> Callable[[F], F]:
    """Decorate a function that uses the GPU: `spaces.GPU(duration=...)` when `spaces` is installed, else unchanged.

    `duration` is seconds, or a function of the decorated function's arguments returning seconds.
    """
    if not spaces_available():
        return lambda fn: fn
    spaces = importlib.import_module("spaces")
    return spaces.GPU(duration=duration)
