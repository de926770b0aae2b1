"""PTI settings: the paper's defaults, presets, overrides and clear errors for bad values."""
from __future__ import annotations

import dataclasses

import pytest

from pti.config import ConfigError, LocalityConfig, ProjectionConfig, PTIConfig, TuningConfig, preset


def test_defaults_are_the_papers_numbers():
    config = PTIConfig()
    projection, tuning, locality = config.projection, config.tuning, config.tuning.locality
    assert (projection.num_steps, projection.learning_rate) == (450, 5e-3)
    assert (projection.lr_rampup_fraction, projection.lr_rampdown_fraction) == (0.05, 0.25)
    assert (projection.initial_noise_factor, projection.noise_ramp_fraction) == (0.05, 0.75)
    assert projection.noise_regularize_weight == 1e5 and projection.optimize_noise
    assert (projection.w_avg_samples, projection.lpips_resolution) == (10_000, 256)
    assert (tuning.num_steps, tuning.learning_rate, tuning.lpips_weight, tuning.l2_weight) == (350, 3e-4, 1.0, 1.0)
    assert tuning.early_stop_lpips == 0.06
    assert locality.enabled
    assert (locality.alpha, locality.weight, locality.l2_weight) == (30.0, 0.1, 1.0)
    assert (locality.num_samples, locality.interval, locality.truncation_psi) == (1, 1, 0.5)
    assert preset("paper") == config


def test_fast_preset_has_fewer_steps_and_the_same_schedule_shape():
    fast, paper = preset("fast"), preset("paper")
    assert fast.projection.num_steps < paper.projection.num_steps
    assert fast.tuning.num_steps < paper.tuning.num_steps
    assert fast.projection.lr_rampdown_fraction == paper.projection.lr_rampdown_fraction
    assert fast.tuning.learning_rate == paper.tuning.learning_rate


def test_overrides_per_section():
    config = preset("custom", projection={"num_steps": 7}, tuning={"num_steps": 5, "early_stop_lpips": None},
                    locality={"enabled": False, "interval": 3})
    assert config.projection.num_steps == 7
    assert config.tuning.num_steps == 5 and config.tuning.early_stop_lpips is None
    assert config.tuning.locality == LocalityConfig(enabled=False, interval=3)
    assert config.projection.learning_rate == 5e-3  # untouched fields keep the paper's values
    whole = preset("paper", projection=ProjectionConfig(num_steps=3))
    assert whole.projection == ProjectionConfig(num_steps=3)


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ProjectionConfig().num_steps = 3


@pytest.mark.parametrize("make, field", [
    (lambda: ProjectionConfig(num_steps=-1), "num_steps"),
    (lambda: ProjectionConfig(num_steps=0), "num_steps"),
    (lambda: ProjectionConfig(learning_rate=0.0), "learning_rate"),
    (lambda: ProjectionConfig(learning_rate=float("nan")), "learning_rate"),
    (lambda: ProjectionConfig(lr_rampdown_fraction=1.5), "lr_rampdown_fraction"),
    (lambda: ProjectionConfig(num_steps=True), "num_steps"),
    (lambda: ProjectionConfig(num_steps=2.5), "num_steps"),
    (lambda: ProjectionConfig(w_avg_source="median"), "w_avg_source"),
    (lambda: ProjectionConfig(report_every=0), "report_every"),
    (lambda: TuningConfig(learning_rate=-3e-4), "learning_rate"),
    (lambda: TuningConfig(early_stop_lpips=0.0), "early_stop_lpips"),
    (lambda: TuningConfig(multi_id_schedule="mean"), "multi_id_schedule"),
    (lambda: TuningConfig(lpips_weight=0.0, l2_weight=0.0), "nothing to minimise"),
    (lambda: TuningConfig(locality={"alpha": 30}), "locality"),
    (lambda: LocalityConfig(interval=0), "interval"),
    (lambda: LocalityConfig(alpha=0.0), "alpha"),
    (lambda: LocalityConfig(weight=-0.1), "weight"),
    (lambda: LocalityConfig(truncation_psi=1.5), "truncation_psi"),
    (lambda: LocalityConfig(enabled=1), "enabled"),
])
def test_bad_values_raise_clear_errors(make, field):
    with pytest.raises(ConfigError, match=field):
        make()


def test_bad_preset_and_override_names_raise():
    with pytest.raises(ConfigError, match="unknown preset 'slow'"):
        preset("slow")
    with pytest.raises(ConfigError, match=r"unknown projection setting\(s\) \['steps'\]"):
        preset("paper", projection={"steps": 10})
    with pytest.raises(ConfigError, match="unknown override section"):
        preset("paper", optimizer={"lr": 1})
    with pytest.raises(ConfigError, match="num_steps must be >= 1"):
        preset("fast", tuning={"num_steps": -5})
