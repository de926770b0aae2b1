"""Settings of PTI as frozen, validated dataclasses; defaults are the paper's (Roich et al. 2021, sec. 3, 4.5)."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

PresetName = Literal["paper", "fast", "custom"]
PRESET_NAMES: tuple[str, ...] = ("paper", "fast", "custom")


class ConfigError(ValueError):
    """A setting of PTI is out of range or of the wrong type."""


def _check_int(owner: object, name: str, minimum: int) -> None:
    value = getattr(owner, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{type(owner).__name__}.{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{type(owner).__name__}.{name} must be >= {minimum}, got {value}")


def _check_float(owner: object, name: str, *, low: float, high: float = math.inf, low_inclusive: bool = True) -> None:
    value = getattr(owner, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{type(owner).__name__}.{name} must be a finite number, got {value!r}")
    too_low = value < low if low_inclusive else value <= low
    if too_low or value > high:
        bound = f"{'>=' if low_inclusive else '>'} {low}" + (f" and <= {high}" if math.isfinite(high) else "")
        raise ConfigError(f"{type(owner).__name__}.{name} must be {bound}, got {value}")


def _check_bool(owner: object, name: str) -> None:
    value = getattr(owner, name)
    if not isinstance(value, bool):
        raise ConfigError(f"{type(owner).__name__}.{name} must be True or False, got {value!r}")


@dataclass(frozen=True)
class ProjectionConfig:
    """W projection (Karras et al.'s projector as PTI uses it): finds the pivot."""

    num_steps: int = 450  # optimisation steps
    learning_rate: float = 5e-3  # peak Adam learning rate
    lr_rampup_fraction: float = 0.05  # linear warm-up over this fraction of the steps
    lr_rampdown_fraction: float = 0.25  # cosine ramp-down over this final fraction of the steps
    initial_noise_factor: float = 0.05  # latent noise at step 0, in units of the W standard deviation
    noise_ramp_fraction: float = 0.75  # latent noise decays (quadratically) to zero over this fraction
    optimize_noise: bool = True  # optimise the per-layer noise inputs too (Karras et al.)
    noise_regularize_weight: float = 1e5  # weight of the multi-scale noise auto-correlation penalty
    w_avg_source: Literal["samples", "buffer"] = "samples"  # start: mean of mapped samples, or G.mapping.w_avg
    w_avg_samples: int = 10_000  # mapped samples for the W mean (if "samples") and the W standard deviation
    lpips_resolution: int = 256  # LPIPS-VGG on images area-downsampled to this size (or G's size if smaller)
    force_fp32: bool = True  # render in float32 everywhere (PTI's choice); False allows fp16 layers on CUDA
    report_every: int = 1  # losses in progress reports every this many steps (each report syncs with the device)
    preview_every: int = 25  # a preview image every this many steps (0: never)

    def __post_init__(self) -> None:
        _check_int(self, "num_steps", 1)
        _check_float(self, "learning_rate", low=0.0, low_inclusive=False)
        for name in ("lr_rampup_fraction", "lr_rampdown_fraction", "noise_ramp_fraction"):
            _check_float(self, name, low=0.0, high=1.0)
        _check_float(self, "initial_noise_factor", low=0.0)
        _check_bool(self, "optimize_noise")
        _check_float(self, "noise_regularize_weight", low=0.0)
        if self.w_avg_source not in ("samples", "buffer"):
            raise ConfigError(f"ProjectionConfig.w_avg_source must be 'samples' or 'buffer', got {self.w_avg_source!r}")
        _check_int(self, "w_avg_samples", 2)
        _check_int(self, "lpips_resolution", 16)
        _check_bool(self, "force_fp32")
        _check_int(self, "report_every", 1)
        _check_int(self, "preview_every", 0)


@dataclass(frozen=True)
class LocalityConfig:
    """Locality regularisation (sec. 3.3): keep the tuned generator equal to the original away from the pivot."""

    enabled: bool = True  # the paper's method has it; the official code defaults it off for speed
    alpha: float = 30.0  # distance of w_r from the pivot, along the direction to a random w_z (whole-code norm)
    weight: float = 0.1  # lambda_R
    l2_weight: float = 1.0  # lambda^R_L2 (LPIPS has weight 1 inside the regulariser)
    num_samples: int = 1  # N_r random latents per identity per regularised step
    interval: int = 1  # regularise every this many updates (the first included)
    truncation_psi: float = 0.5  # truncation of the random w_z, as the official code

    def __post_init__(self) -> None:
        _check_bool(self, "enabled")
        _check_float(self, "alpha", low=0.0, low_inclusive=False)
        _check_float(self, "weight", low=0.0)
        _check_float(self, "l2_weight", low=0.0)
        _check_int(self, "num_samples", 1)
        _check_int(self, "interval", 1)
        _check_float(self, "truncation_psi", low=0.0, high=1.0, low_inclusive=False)


@dataclass(frozen=True)
class TuningConfig:
    """Pivotal tuning (sec. 3.2): all synthesis weights trainable, pivot frozen, constant noise."""

    num_steps: int = 350  # optimisation steps (fewer if early stop triggers); with N identities see multi_id_schedule
    learning_rate: float = 3e-4  # Adam learning rate
    lpips_weight: float = 1.0  # lambda_LPIPS (LPIPS-AlexNet, as the official code)
    l2_weight: float = 1.0  # lambda_L2
    lpips_resolution: int | None = None  # LPIPS on images area-downsampled to this size; None: G's resolution
    early_stop_lpips: float | None = 0.06  # stop once every identity's LPIPS is below this; None: never
    early_stop_check_every: int = 10  # check the early-stop condition every this many steps (each check syncs)
    force_fp32: bool = True  # render in float32 everywhere (PTI's choice); False allows fp16 layers on CUDA
    # Several identities: "per_identity" as the official multi-ID coach (num_steps epochs over the identities in
    # order, one Adam step on one identity's loss each: num_steps * N updates, no early stop, the regulariser's
    # interval counted in updates and its codes around that identity's pivot); "batched": one step on the mean loss
    # over all identities (the paper's formula; num_steps updates, early stop as for one). One identity: the same.
    multi_id_schedule: Literal["per_identity", "batched"] = "per_identity"
    locality: LocalityConfig = field(default_factory=LocalityConfig)
    report_every: int = 1  # losses in progress reports every this many steps (each report syncs with the device)
    preview_every: int = 25  # a preview image every this many steps (0: never)

    def __post_init__(self) -> None:
        _check_int(self, "num_steps", 1)
        _check_float(self, "learning_rate", low=0.0, low_inclusive=False)
        _check_float(self, "lpips_weight", low=0.0)
        _check_float(self, "l2_weight", low=0.0)
        if self.lpips_weight == 0 and self.l2_weight == 0:
            raise ConfigError("TuningConfig: lpips_weight and l2_weight are both 0, so there is nothing to minimise")
        if self.lpips_resolution is not None:
            _check_int(self, "lpips_resolution", 16)
        if self.early_stop_lpips is not None:
            _check_float(self, "early_stop_lpips", low=0.0, low_inclusive=False)
        _check_int(self, "early_stop_check_every", 1)
        _check_bool(self, "force_fp32")
        if self.multi_id_schedule not in ("per_identity", "batched"):
            raise ConfigError("TuningConfig.multi_id_schedule must be 'per_identity' or 'batched', "
                              f"got {self.multi_id_schedule!r}")
        if not isinstance(self.locality, LocalityConfig):
            raise ConfigError(f"TuningConfig.locality must be a LocalityConfig, got {type(self.locality).__name__}")
        _check_int(self, "report_every", 1)
        _check_int(self, "preview_every", 0)


@dataclass(frozen=True)
class PTIConfig:
    """The whole inversion: projection to a pivot, then pivotal tuning."""

    projection: ProjectionConfig = field(default_factory=ProjectionConfig)
    tuning: TuningConfig = field(default_factory=TuningConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.projection, ProjectionConfig):
            raise ConfigError(f"PTIConfig.projection must be a ProjectionConfig, got {type(self.projection).__name__}")
        if not isinstance(self.tuning, TuningConfig):
            raise ConfigError(f"PTIConfig.tuning must be a TuningConfig, got {type(self.tuning).__name__}")


def _replace(config: Any, overrides: Mapping[str, Any] | Any, section: str) -> Any:
    """`config` with the fields in `overrides` (a mapping, or a whole config object of the same type) replaced."""
    if isinstance(overrides, type(config)):
        return overrides
    if not isinstance(overrides, Mapping):
        raise ConfigError(f"overrides for {section!r} must be a dict of field values, got {type(overrides).__name__}")
    known = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"unknown {section} setting(s) {unknown}; known: {sorted(known)}")
    return dataclasses.replace(config, **overrides)


# The `fast` preset: few enough steps for a CPU (see bench/README.md for the time per step); the schedule fractions
# stay the paper's, so the optimisation has the same shape, only shorter.
_FAST = PTIConfig(
    projection=ProjectionConfig(num_steps=100, preview_every=10),
    tuning=TuningConfig(num_steps=50, locality=LocalityConfig(interval=2), preview_every=10),
)


def preset(name: str = "paper", **overrides: Mapping[str, Any]) -> PTIConfig:
    """A named configuration (`paper`, `fast`, `custom` = paper + overrides) with per-section overrides.

    Overrides are dicts of field values per section, e.g.
    `preset("fast", projection={"num_steps": 20}, tuning={"num_steps": 10}, locality={"enabled": False})`.
    """
    if name not in PRESET_NAMES:
        raise ConfigError(f"unknown preset {name!r}; choose one of {list(PRESET_NAMES)}")
    base = _FAST if name == "fast" else PTIConfig()
    unknown = sorted(set(overrides) - {"projection", "tuning", "locality"})
    if unknown:
        raise ConfigError(f"unknown override section(s) {unknown}; use 'projection', 'tuning' or 'locality'")
    projection = _replace(base.projection, overrides.get("projection", {}), "projection")
    tuning = _replace(base.tuning, overrides.get("tuning", {}), "tuning")
    if "locality" in overrides:
        tuning = dataclasses.replace(tuning, locality=_replace(tuning.locality, overrides["locality"], "locality"))
    return PTIConfig(projection=projection, tuning=tuning)
