"""How many seconds a GPU call asks ZeroGPU for: measured step times with a margin, capped.

Every inversion and render in a GPU function measures itself (`InversionTimings`, `RenderTimings`) and the main
process records the latest measurement here. Until a first call has been measured, a stated prior stands in
(`ZEROGPU_PRIOR`: not measured on a ZeroGPU slice, see bench/README.md). The same numbers give the time estimate
shown before an inversion, so the estimate itself costs no GPU time.
"""
from __future__ import annotations

import dataclasses
import math
import threading
from dataclasses import dataclass

# Requested seconds = ceil(MARGIN x expected + SLACK_S), within [MIN_SECONDS, the cap].
MARGIN = 1.5
SLACK_S = 5.0
MIN_SECONDS = 10
# The longest call we ask for: staff posts give 300 s for logged-in ZeroGPU users (not documented; may change).
MAX_SECONDS = 300


@dataclass(frozen=True)
class InversionTimings:
    """What one inversion in a GPU function took, measured there (seconds)."""

    setup: float  # the call outside the steps: models to the device, W statistics, reconstructions, results back
    pivot: float  # the W projection's steps, or the e4e encoder pass
    projection_steps: int  # steps the projections ran, over every face (0 for e4e pivots)
    tuning: float  # the tuning's updates (their locality regularisation included)
    tuning_steps: int  # updates the tuning ran (fewer than asked for after an early stop; one face each in the
    # multi-ID schedule)
    locality: bool  # whether the locality regulariser was on

    def __post_init__(self) -> None:
        if min(self.setup, self.pivot, self.tuning) < 0 or min(self.projection_steps, self.tuning_steps) < 0:
            raise ValueError(f"timings must be non-negative, got {self}")


@dataclass(frozen=True)
class StepSeconds:
    """Seconds of the parts of an inversion, per call or per step."""

    setup: float  # per call, outside the steps
    projection_step: float  # one W projection step
    e4e_pivot: float  # one e4e encoder pass
    tuning_step: float  # one tuning step, locality regulariser off
    locality_factor: float  # a tuning step with the regulariser on takes this many times as long
    render_setup: float  # per render call, outside the generator passes
    render_image: float  # one image of an edit chain


ZEROGPU_PRIOR = StepSeconds(setup=20.0, projection_step=0.05, e4e_pivot=2.0, tuning_step=0.06, locality_factor=1.5,
                            render_setup=5.0, render_image=0.1)
"""A 1024 px generator with the reference ops on a ZeroGPU slice, from the design budget with margin; not measured."""


@dataclass(frozen=True)
class Estimate:
    """Expected seconds of a GPU call, and whether they come from a measured call (else from the prior)."""

    seconds: float
    measured: bool


class GpuDurations:
    """The latest measured step times (the prior until then) -> expected and requested seconds. Thread-safe."""

    def __init__(self, prior: StepSeconds = ZEROGPU_PRIOR, *, max_seconds: int = MAX_SECONDS) -> None:
        if max_seconds < MIN_SECONDS:
            raise ValueError(f"max_seconds must be at least {MIN_SECONDS}, got {max_seconds}")
        self.max_seconds = max_seconds
        self._times = prior
        self._measured_inversion = False
        self._measured_render = False
        self._measured_locality: dict[bool, float] = {}  # locality on/off -> measured seconds per tuning step
        self._lock = threading.Lock()

    @property
    def step_seconds(self) -> StepSeconds:
        """The step times in use now."""
        with self._lock:
            return self._times

    def record_inversion(self, timings: InversionTimings) -> None:
        """Take the step times of a measured inversion."""
        with self._lock:
            times = self._times
            changes: dict[str, float] = {"setup": timings.setup}
            if timings.projection_steps > 0:
                changes["projection_step"] = timings.pivot / timings.projection_steps
            else:
                changes["e4e_pivot"] = timings.pivot
            if timings.tuning_steps > 0:
                self._measured_locality[timings.locality] = timings.tuning / timings.tuning_steps
                plain, regularised = self._measured_locality.get(False), self._measured_locality.get(True)
                if plain is not None:
                    changes["tuning_step"] = plain
                if plain is not None and regularised is not None and plain > 0:
                    changes["locality_factor"] = regularised / plain
                elif plain is None:
                    changes["tuning_step"] = regularised / times.locality_factor
            self._times = dataclasses.replace(times, **changes)
            self._measured_inversion = True

    def record_render(self, seconds: float, images: int) -> None:
        """Take the time of a measured render of `images` images (setup and per image split as the prior's)."""
        if seconds < 0 or images < 1:
            raise ValueError(f"a render takes non-negative seconds for at least one image, got {seconds}, {images}")
        with self._lock:
            times = self._times
            prior_total = times.render_setup + images * times.render_image
            scale = seconds / prior_total if prior_total > 0 else 1.0
            self._times = dataclasses.replace(times, render_setup=times.render_setup * scale,
                                              render_image=times.render_image * scale)
            self._measured_render = True

    def inversion(self, *, projection_steps: int, tuning_steps: int, locality: bool, pivot: str,
                  faces: int = 1) -> Estimate:
        """Expected seconds of an inversion of `faces` faces into one generator: a projection per face (the e4e
        pivots in one batched pass), and in the multi-ID schedule `tuning_steps` updates per face."""
        with self._lock:
            times, measured = self._times, self._measured_inversion
        pivot_seconds = faces * projection_steps * times.projection_step if pivot == "w" else times.e4e_pivot
        tuning_step = times.tuning_step * (times.locality_factor if locality else 1.0)
        return Estimate(times.setup + pivot_seconds + faces * tuning_steps * tuning_step, measured)

    def render(self, images: int) -> Estimate:
        """Expected seconds of rendering `images` images of an edit chain."""
        with self._lock:
            times, measured = self._times, self._measured_render
        return Estimate(times.render_setup + images * times.render_image, measured)

    @staticmethod
    def wanted(estimate: Estimate) -> int:
        """Seconds a call expected to take `estimate` should have: with the margin, before any bound."""
        return math.ceil(MARGIN * estimate.seconds + SLACK_S)

    def requested(self, estimate: Estimate) -> int:
        """Seconds to ask for a call expected to take `estimate`: `wanted`, within [MIN_SECONDS, the cap]."""
        return max(MIN_SECONDS, min(self.max_seconds, self.wanted(estimate)))

