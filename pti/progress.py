"""Progress reports from the projection and tuning loops, and cancellation through the progress callback.

The callback is called once per optimisation step, so a run stops within one step of the callback asking.
Loss values need a host/device sync (`float()` of a device tensor): they are read only when a callback is given,
and only every `report_every` steps (on other steps `Progress.losses` is empty). Preview images (a device -> host
copy) come every `preview_every` steps. Callers who want full speed pass no callback or report rarely.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Literal, Mapping

import torch
from PIL import Image

from pti.images import tensor_to_pil

Phase = Literal["projection", "tuning"]


@dataclass(frozen=True)
class Progress:
    """One step's report: where the run is, its current losses (on report steps) and a preview (on preview steps)."""

    phase: Phase  # "projection" or "tuning"
    step: int  # steps done so far in this phase (1 .. total)
    total: int  # steps planned in this phase
    losses: Mapping[str, float] = field(default_factory=dict)  # empty on steps that are not report steps
    preview: Image.Image | None = None  # current rendering(s), side by side; None on non-preview steps
    elapsed_s: float = 0.0  # seconds since this phase started
    identity: int | None = None  # the one identity this step is for (its projection, or a multi-ID tuning update
    # of the per-identity schedule); None: all (or the only one)


class _StopSignal:
    """The type of `STOP`, the value a progress callback returns to cancel the run."""

    def __bool__(self) -> bool:
        return True

    def __repr__(self) -> str:
        return "STOP"


STOP = _StopSignal()

ProgressCallback = Callable[[Progress], object]


class Cancelled(Exception):
    """The progress callback asked to stop; raised out of `project_w` / `pivotal_tune` / the pipeline."""

    def __init__(self, phase: Phase, step: int, total: int) -> None:
        super().__init__(f"{phase} cancelled by the progress callback after step {step} of {total}")
        self.phase = phase
        self.step = step
        self.total = total


def _side_by_side(images: torch.Tensor) -> Image.Image:
    """(N, 3, H, W) tensor in [-1, 1] -> one PIL image with the N images in a row."""
    row = images.detach()[:, :3].permute(1, 2, 0, 3).reshape(1, 3, images.shape[2], -1)
    return tensor_to_pil(row)[0]


class ProgressReporter:
    """Calls the progress callback once per step; reads losses and previews only when they are due."""

    def __init__(self, callback: ProgressCallback | None, phase: Phase, total: int, *, report_every: int,
                 preview_every: int) -> None:
        self.callback = callback
        self.phase = phase
        self.total = total
        self.report_every = report_every
        self.preview_every = preview_every
        self.start = time.perf_counter()

    @property
    def active(self) -> bool:
        """Whether a callback is listening (if not, `step` does nothing and nothing is synced)."""
        return self.callback is not None

    def step(self, step: int, losses: Mapping[str, torch.Tensor], images: torch.Tensor | None = None, *,
             identity: int | None = None) -> None:
        """Report step `step` (1-based), which used `identity` (None: all); raise `Cancelled` if the callback asks."""
        if self.callback is None:
            return
        last = step == self.total
        report = last or step % self.report_every == 0
        preview = images is not None and self.preview_every > 0 and (last or step % self.preview_every == 0)
        progress = Progress(
            phase=self.phase,
            step=step,
            total=self.total,
            losses={name: float(value.detach()) for name, value in losses.items()} if report else {},
            preview=_side_by_side(images) if preview else None,
            elapsed_s=time.perf_counter() - self.start,
            identity=identity,
        )
        if self.callback(progress):
            raise Cancelled(self.phase, step, self.total)
