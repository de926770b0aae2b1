"""PTI with an e4e pivot on the tiny setup: a tiny e4e of the released architecture (random weights) fitted to the
tiny generator's W+ (8 x 32); lazy loading, the shape check, progress and reconstruction gains."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from targets import out_of_domain_targets
from tiny_e4e import save_released_layout, tiny_e4e

import pti.weights
from pti.config import ProjectionConfig, preset
from pti.e4e import E4E, E4EGeneratorMismatchError
from pti.e4e_network import Encoder4Editing
from pti.images import tensor_to_pil
from pti.pipeline import PTIPipeline
from pti.progress import STOP, Cancelled
from pti.weights import load_generator

CONFIG = preset("custom", projection={"num_steps": 3, "learning_rate": 0.05, "w_avg_samples": 1000},
                tuning={"num_steps": 5, "learning_rate": 3e-3, "early_stop_lpips": None})


def max_pixel_difference(a, b) -> int:
    """Largest difference of two 8-bit images (renders of the same code may differ by a rounding step)."""
    return int(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max())


@pytest.fixture(scope="module")
def e4e() -> E4E:
    return tiny_e4e(load_generator("tiny"))


@pytest.fixture(scope="module")
def pipeline(e4e):
    return PTIPipeline("tiny", config=CONFIG, lpips_pretrained=False, e4e=e4e)


@pytest.fixture(scope="module")
def photos(pipeline):
    """Two out-of-domain 32 px images (already 'aligned': used with align=False)."""
    return tensor_to_pil(out_of_domain_targets(pipeline.generator, 2)[0])


def test_the_e4e_pivot_is_the_encoders_wplus_code(pipeline, e4e, photos):
    reports = []
    target = torch.zeros(1, 3, 32, 32)  # ignored: the encoder reads the face it is given
    pivot = pipeline.find_pivot(target, method="e4e", face=photos[0], callback=reports.append)
    assert pivot.is_wplus and pivot.w.shape == (1, 8, 32) and pivot.source == "e4e" and pivot.steps_run == 0
    torch.testing.assert_close(pivot.w, e4e.invert(photos[0]), rtol=0, atol=1e-5)
    assert not torch.allclose(pivot.w, e4e.latent_avg[None], atol=0.05)  # the image moves it away from w_avg
    other = pipeline.find_pivot(target, method="e4e", face=photos[1])
    assert not torch.allclose(pivot.w, other.w, atol=0.05)
    # One "projection" step, with the pivot's rendering by the original generator as its preview.
    assert [(r.phase, r.step, r.total) for r in reports] == [("projection", 1, 1)]
    with torch.no_grad():
        render = pipeline.generator.synthesis(pivot.ws, noise_mode="const", force_fp32=True)
    assert max_pixel_difference(reports[0].preview, tensor_to_pil(render)[0]) <= 1
    # No previews asked for (the command line): no rendering, the same pivot.
    quiet = []
    again = pipeline.find_pivot(target, method="e4e", face=photos[0], config=ProjectionConfig(preview_every=0),
                                callback=quiet.append)
    assert [(r.step, r.preview) for r in quiet] == [(1, None)]
    torch.testing.assert_close(again.w, pivot.w, rtol=0, atol=1e-5)


def test_pti_with_the_e4e_pivot_improves_reconstruction_like_the_w_pivot(pipeline, photos):
    results = {method: pipeline.invert(photos[0], align=False, pivot=method) for method in ("e4e", "w")}
    e4e_result = results["e4e"]
    assert e4e_result.pivot_method == "e4e" and results["w"].pivot_method == "w"
    assert e4e_result.pivot.source == "e4e" and e4e_result.pivot.is_wplus
    assert e4e_result.tuned.pivots[0] is e4e_result.pivot
    assert e4e_result.projection_s > 0 and e4e_result.tuning_s > 0
    for method, result in results.items():
        before, after = result.identities[0].metrics_original, result.identities[0].metrics_tuned
        print(f"{method}: MSE {before.mse:.4f} -> {after.mse:.4f}, LPIPS {before.lpips:.4f} -> {after.lpips:.4f}")
        assert after.mse < 0.8 * before.mse, method
        assert after.lpips < before.lpips, method
    # The tuned generator renders the W+ pivot as reported.
    identity = e4e_result.identities[0]
    assert max_pixel_difference(identity.pivot_tuned, tensor_to_pil(e4e_result.tuned.render(identity.pivot))[0]) <= 1


def test_invert_many_with_e4e_pivots(pipeline, e4e, photos):
    reports = []
    result = pipeline.invert_many(photos, align=False, pivot="e4e", callback=reports.append)
    assert [p.source for p in result.tuned.pivots] == ["e4e", "e4e"]
    # Every face in one encoder pass (one projection step), each pivot the encoder's code of its own face.
    assert [(r.step, r.total) for r in reports if r.phase == "projection"] == [(1, 1)]
    for photo, pivot in zip(photos, result.tuned.pivots):  # a batch of 2 sums in another order: ~4e-5 apart
        torch.testing.assert_close(pivot.w, e4e.invert(photo), rtol=0, atol=2e-4)
    for identity in result.identities:
        assert identity.metrics_tuned.mse < identity.metrics_original.mse


def test_cancelling_at_the_e4e_step(pipeline, photos):
    with pytest.raises(Cancelled) as raised:
        pipeline.invert(photos[0], align=False, pivot="e4e", callback=lambda progress: STOP)
    assert (raised.value.phase, raised.value.step, raised.value.total) == ("projection", 1, 1)


def test_the_encoder_is_loaded_only_for_e4e_pivots_and_from_the_registry_by_default(tmp_path, monkeypatch, e4e,
                                                                                  photos):
    checkpoint = save_released_layout(e4e, tmp_path / "tiny_e4e.pt")
    asked = []

    def resolve(key, **kwargs):
        asked.append(key)
        return checkpoint

    monkeypatch.setattr(pti.weights, "resolve", resolve)
    pipeline = PTIPipeline("tiny", config=CONFIG, lpips_pretrained=False)
    pipeline.invert(photos[0], align=False)
    assert asked == []  # W pivots never load the encoder
    loaded = pipeline.load_e4e()
    assert asked == ["e4e-ffhq-encode"] and pipeline.load_e4e() is loaded  # loaded once
    torch.testing.assert_close(loaded.invert(photos[0]), e4e.invert(photos[0]), rtol=0, atol=1e-5)


def test_a_missing_encoder_file_fails_only_when_e4e_is_asked_for(tmp_path, photos):
    pipeline = PTIPipeline("tiny", config=CONFIG, lpips_pretrained=False, e4e=tmp_path / "absent.pt")
    assert pipeline.invert(photos[0], align=False).pivot_method == "w"
    with pytest.raises(FileNotFoundError, match="e4e checkpoint not found"):
        pipeline.invert(photos[0], align=False, pivot="e4e")


def test_an_encoder_for_another_generator_is_a_clear_error(photos):
    with torch.device("meta"):
        ffhq_encoder = Encoder4Editing(18)  # the released layout: 18 x 512, for the FFHQ 1024 px generator
    pipeline = PTIPipeline("tiny", config=CONFIG, lpips_pretrained=False,
                           e4e=E4E(encoder=ffhq_encoder, latent_avg=torch.zeros(18, 512)))
    expected = r"e4e encoder gives W\+ codes of shape \(18, 512\) but the generator takes \(8, 32\)"
    with pytest.raises(E4EGeneratorMismatchError, match=expected):
        pipeline.invert(photos[0], align=False, pivot="e4e")
    with pytest.raises(E4EGeneratorMismatchError, match="use the W projection pivot"):
        pipeline.estimate_seconds(pivot="e4e")


def test_the_e4e_estimate_counts_one_encoder_pass_not_projection_steps(pipeline, monkeypatch):
    measure = pipeline.measure_step_times
    monkeypatch.setattr(pipeline, "measure_step_times", lambda: measure(steps=2))
    calls = []
    measure_e4e = pipeline.measure_e4e_seconds
    monkeypatch.setattr(pipeline, "measure_e4e_seconds", lambda: calls.append(1) or measure_e4e())
    few = preset("custom", projection={"num_steps": 10}, tuning={"num_steps": 10})
    many = preset("custom", projection={"num_steps": 1000}, tuning={"num_steps": 10})
    assert pipeline.estimate_seconds(few, pivot="e4e") == pipeline.estimate_seconds(many, pivot="e4e")
    assert calls == [1]
    assert pipeline.estimate_seconds(many, pivot="w") > pipeline.estimate_seconds(few, pivot="w")
    with pytest.raises(ValueError, match="unknown pivot method 'z'"):
        pipeline.estimate_seconds(few, pivot="z")
