"""PTIPipeline on the tiny generator: one and several identities, typed results, estimates, cancellation."""
from __future__ import annotations

import pytest
import torch
from targets import out_of_domain_targets

from pti.config import preset
from pti.images import tensor_to_pil
from pti.pipeline import PTIPipeline
from pti.progress import STOP, Cancelled

CONFIG = preset("custom", projection={"num_steps": 3, "learning_rate": 0.05, "w_avg_samples": 1000},
                tuning={"num_steps": 5, "learning_rate": 3e-3, "early_stop_lpips": None})


@pytest.fixture(scope="module")
def pipeline():
    return PTIPipeline("tiny", config=CONFIG, lpips_pretrained=False)


@pytest.fixture(scope="module")
def photos(pipeline):
    """Two out-of-domain 32 px images (already 'aligned': used with align=False)."""
    return tensor_to_pil(out_of_domain_targets(pipeline.generator, 2)[0])


def test_invert_one_image(pipeline, photos):
    state = {name: t.clone() for name, t in pipeline.generator.state_dict().items()}
    result = pipeline.invert(photos[0], align=False)
    assert result.aligned is None and len(result.identities) == 1
    assert result.pivot.w.shape == (1, 32) and result.pivot.steps_run == 3
    assert result.pivot_original.size == result.pivot_tuned.size == (32, 32)
    identity = result.identities[0]
    assert identity.target.shape == (1, 3, 32, 32)
    assert identity.metrics_tuned.mse < identity.metrics_original.mse
    assert identity.metrics_tuned.lpips < identity.metrics_original.lpips
    assert result.tuned.steps_run == 5 and result.projection_s > 0 and result.tuning_s > 0
    assert all(torch.equal(t, state[n]) for n, t in pipeline.generator.state_dict().items())


def test_invert_many_tunes_one_generator_for_all(pipeline, photos):
    result = pipeline.invert_many(photos, align=False, seed=3)
    assert len(result.identities) == 2 and len(result.tuned.pivots) == 2
    assert result.tuned.steps_run == 2 * CONFIG.tuning.num_steps  # the official schedule: one update per identity
    for identity in result.identities:
        assert identity.metrics_tuned.mse < identity.metrics_original.mse
    with pytest.raises(ValueError, match="holds 2 identities"):
        result.pivot


def test_estimate_is_measured_once_and_grows_with_the_steps(pipeline, monkeypatch):
    calls = []
    measure = pipeline.measure_step_times
    monkeypatch.setattr(pipeline, "measure_step_times", lambda: calls.append(1) or measure(steps=2))
    short = pipeline.estimate_seconds(preset("custom", projection={"num_steps": 10}, tuning={"num_steps": 10}))
    long = pipeline.estimate_seconds(preset("custom", projection={"num_steps": 100}, tuning={"num_steps": 100}))
    no_reg = pipeline.estimate_seconds(preset("custom", projection={"num_steps": 100}, tuning={"num_steps": 100},
                                              locality={"enabled": False}))
    assert calls == [1]
    assert 0 < short < long and no_reg <= long
    assert pipeline.estimate_seconds(preset("paper"), num_identities=2) > pipeline.estimate_seconds(preset("paper"))


def test_cancel_and_unknown_pivot_method(pipeline, photos):
    with pytest.raises(Cancelled) as raised:
        pipeline.invert(photos[0], align=False, callback=lambda progress: STOP)
    assert raised.value.phase == "projection" and raised.value.step == 1
    with pytest.raises(ValueError, match=r"unknown pivot method 'z'; available: \['w', 'e4e'\]"):
        pipeline.invert(photos[0], align=False, pivot="z")


def test_a_generator_module_already_on_the_device_is_used_as_is(tiny_generator):
    pipeline = PTIPipeline(tiny_generator, lpips_pretrained=False)
    assert pipeline.generator is tiny_generator  # same device: used as is (never modified, see above)
    assert pipeline.resolution == 32 and pipeline.config == preset("paper")
