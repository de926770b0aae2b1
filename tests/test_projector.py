"""W projection on the tiny generator: loss goes down, G untouched, seeded, cancellable, clear input errors."""
from __future__ import annotations

import pytest
import torch

from pti.config import ProjectionConfig
from pti.images import tensor_to_pil
from pti.losses import build_lpips, noise_regularization, normalize_noise_
from pti.progress import STOP, Cancelled
from pti.projector import Pivot, TargetError, latent_noise_scale_at, learning_rate_at, project_w
from targets import out_of_domain_targets


@pytest.fixture(scope="module")
def vgg():
    return build_lpips("vgg", pretrained=False)


@pytest.fixture()
def target(tiny_generator):
    return out_of_domain_targets(tiny_generator, 1)[0]


def render(G, ws):
    with torch.no_grad():
        return G.synthesis(ws, noise_mode="const", force_fp32=True)


def test_projection_lowers_the_loss_and_leaves_the_generator_alone(tiny_generator, target, vgg):
    G = tiny_generator
    before = {name: t.clone() for name, t in G.state_dict().items()}
    config = ProjectionConfig(num_steps=20, learning_rate=0.05)
    pivot = project_w(G, target, config, lpips=vgg)

    assert pivot.w.shape == (1, G.w_dim) and pivot.ws.shape == (1, G.num_ws, G.w_dim)
    assert not pivot.is_wplus and pivot.source == "w" and pivot.steps_run == 20
    assert pivot.loss_history["lpips"].shape == (20,)
    # Measured independently of the loop: G's own renderings (its constant noise) of the start and the pivot.
    start = G.mapping(torch.randn(10_000, G.z_dim, generator=torch.Generator().manual_seed(0)), None).mean(0)[None]
    loss_start = vgg(render(G, start), target).item()
    loss_pivot = vgg(render(G, pivot.ws), target).item()
    assert loss_pivot < 0.5 * loss_start
    for name, tensor in G.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_same_seed_same_pivot(tiny_generator, target, vgg):
    config = ProjectionConfig(num_steps=3, w_avg_samples=500)
    first = project_w(tiny_generator, target, config, lpips=vgg, seed=7)
    second = project_w(tiny_generator, target, config, lpips=vgg, seed=7)
    other = project_w(tiny_generator, target, config, lpips=vgg, seed=8)
    assert torch.equal(first.w, second.w)
    assert not torch.equal(first.w, other.w)


def test_buffer_start_and_pil_target(tiny_generator, target, vgg):
    config = ProjectionConfig(num_steps=2, w_avg_source="buffer", w_avg_samples=100, optimize_noise=False)
    pivot = project_w(tiny_generator, tensor_to_pil(target)[0], config, lpips=vgg)
    assert pivot.w.shape == (1, tiny_generator.w_dim) and torch.isfinite(pivot.w).all()


def test_progress_reports_and_cancellation_within_one_step(tiny_generator, target, vgg):
    reports = []

    def callback(progress):
        reports.append(progress)
        return STOP if progress.step == 2 else None

    config = ProjectionConfig(num_steps=10, w_avg_samples=100, report_every=2, preview_every=2)
    with pytest.raises(Cancelled) as raised:
        project_w(tiny_generator, target, config, lpips=vgg, callback=callback)
    assert raised.value.phase == "projection" and raised.value.step == 2
    assert [(p.phase, p.step, p.total) for p in reports] == [("projection", 1, 10), ("projection", 2, 10)]
    assert reports[0].losses == {} and reports[0].preview is None  # step 1 is neither a report nor a preview step
    assert set(reports[1].losses) == {"lpips", "noise_reg", "loss"}
    assert reports[1].preview.size == (tiny_generator.img_resolution, tiny_generator.img_resolution)


def test_bad_targets_raise_clear_errors(tiny_generator, vgg):
    with pytest.raises(TargetError, match=r"shape \(1, 3, 32, 32\)"):
        project_w(tiny_generator, torch.zeros(1, 3, 64, 64), ProjectionConfig(num_steps=1), lpips=vgg)
    with pytest.raises(TargetError, match="PIL image or a tensor"):
        project_w(tiny_generator, "face.png", ProjectionConfig(num_steps=1), lpips=vgg)
    with pytest.raises(ValueError, match=r"shape \(1, w_dim\)"):
        Pivot(w=torch.zeros(2, 32), num_ws=8)


def test_schedules_follow_karras_et_al():
    config = ProjectionConfig(num_steps=100, learning_rate=0.01)
    assert learning_rate_at(config, 0) == 0.0  # linear ramp-up from zero over the first 5 steps
    assert learning_rate_at(config, 2) == pytest.approx(0.01 * 2 / 5)
    assert learning_rate_at(config, 50) == pytest.approx(0.01)
    assert learning_rate_at(config, 99) < 0.001  # cosine ramp-down over the last 25 steps
    assert latent_noise_scale_at(config, 0, w_std=2.0) == pytest.approx(2.0 * 0.05)
    assert latent_noise_scale_at(config, 75, w_std=2.0) == 0.0


def test_noise_regularisation_penalises_correlated_noise():
    rng = torch.Generator().manual_seed(0)
    white = torch.randn(32, 32, generator=rng)
    smooth = torch.nn.functional.avg_pool2d(torch.randn(1, 1, 35, 35, generator=rng), 4, stride=1)[0, 0]
    normalize_noise_([smooth])
    assert smooth.mean().abs() < 1e-5 and smooth.square().mean() == pytest.approx(1.0, abs=1e-4)
    assert noise_regularization([smooth]) > 100 * noise_regularization([white])


def test_pivot_shapes():
    for shape in ((1, 32), (1, 8, 32)):
        assert Pivot(w=torch.zeros(shape), num_ws=8).w.shape == shape
    for shape in ((2, 32), (2, 8, 32), (1, 9, 32), (1, 8, 32, 1), (32,)):
        with pytest.raises(ValueError, match=r"a pivot must have shape \(1, w_dim\) or \(1, 8, w_dim\)"):
            Pivot(w=torch.zeros(shape), num_ws=8)


def test_pil_targets_are_resized_and_other_types_named():
    from PIL import Image

    from pti.projector import target_tensor

    image = Image.new("RGB", (64, 64), (255, 0, 0))
    assert target_tensor(image, 32).shape == (1, 3, 32, 32)
    with pytest.raises(TargetError, match="a target must be a PIL image or a tensor, got str"):
        target_tensor("face.png", 32)


def test_schedules_without_ramps():
    """Fractions of 0: no ramp-down (the peak rate after the ramp-up), no latent noise at any step."""
    config = ProjectionConfig(num_steps=10, learning_rate=0.01, lr_rampup_fraction=0.5, lr_rampdown_fraction=0.0,
                              noise_ramp_fraction=0.0)
    assert [learning_rate_at(config, step) for step in (0, 2, 5, 9)] == pytest.approx([0.0, 0.004, 0.01, 0.01])
    assert all(latent_noise_scale_at(config, step, w_std=2.0) == 0.0 for step in range(10))
    full = ProjectionConfig(num_steps=10, noise_ramp_fraction=1.0, initial_noise_factor=0.05)
    assert latent_noise_scale_at(full, 5, w_std=2.0) == pytest.approx(2.0 * 0.05 * 0.25)
