"""Oracles for PTI's numerical core, written from first principles, independent of the code under test.

Each test recomputes what a step of `project_w` or `pivotal_tune` should do (the `lpips` package's own LPIPS
module, L2 and Karras et al.'s noise penalty written out, the learning-rate schedule as the formula, the regulariser's
codes as the official PTI code writes them, Adam as its update rule) and compares value by value with the losses the
step recorded and the parameters after its updates. Only the seeding contract (which generator draws which random
numbers, in which order) is taken from the implementation: it is what makes a value-by-value comparison possible.
"""
from __future__ import annotations

import copy
import dataclasses
import warnings

import lpips as lpips_package
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from targets import out_of_domain_targets

from pti.config import LocalityConfig, ProjectionConfig, TuningConfig
from pti.losses import build_lpips
from pti.projector import Pivot, project_w
from pti.tuning import pivotal_tune

ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8


@pytest.fixture(scope="module")
def G(tiny_init_kwargs):
    from conftest import TINY_DIR
    from pti.networks import Generator

    generator = Generator(**tiny_init_kwargs)
    generator.load_state_dict(torch.load(TINY_DIR / "G_ema_state_dict.pt", weights_only=True), strict=True)
    return generator.eval().requires_grad_(False)


def package_lpips(ours):
    """The `lpips` package's own LPIPS module holding the same weights as `ours` (its forward is the oracle)."""
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = lpips_package.LPIPS(net=ours.net_name, pnet_rand=True, verbose=False)
    reference = reference.to_empty(device="cpu")
    reference.load_state_dict(ours.network.state_dict())
    return reference.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def vgg():
    ours = build_lpips("vgg", pretrained=False, seed=1)
    return ours, package_lpips(ours)


@pytest.fixture(scope="module")
def alex():
    ours = build_lpips("alex", pretrained=False, seed=2)
    return ours, package_lpips(ours)


def lpips_distance(network, images_a, images_b):
    """Per-image LPIPS (N,) through the package's forward (inputs in [-1, 1])."""
    return network(images_a, images_b).flatten()


def l2(images_a, images_b):
    """Per-image mean squared error (N,)."""
    return ((images_a - images_b) ** 2).flatten(1).mean(dim=1)


class Adam:
    """Kingma & Ba's update rule written out (bias-corrected moments; torch's default eps placement)."""

    def __init__(self, parameters):
        self.parameters = list(parameters)
        self.m = [torch.zeros_like(p) for p in self.parameters]
        self.v = [torch.zeros_like(p) for p in self.parameters]
        self.t = 0

    @torch.no_grad()
    def step(self, gradients, lr):
        self.t += 1
        (b1, b2) = ADAM_BETAS
        for p, g, m, v in zip(self.parameters, gradients, self.m, self.v):
            m.mul_(b1).add_((1 - b1) * g)
            v.mul_(b2).add_((1 - b2) * g * g)
            m_hat = m / (1 - b1 ** self.t)
            v_hat = v / (1 - b2 ** self.t)
            p.sub_(lr * m_hat / (v_hat.sqrt() + ADAM_EPS))


# ----- projection ---------------------------------------------------------------------------------------------------

def karras_lr(step, num_steps, peak, rampup, rampdown):
    """Karras et al.'s schedule (stylegan2-ada-pytorch projector.py), as written there."""
    t = step / num_steps
    lr_ramp = min(1.0, (1.0 - t) / rampdown)
    lr_ramp = 0.5 - 0.5 * np.cos(lr_ramp * np.pi)
    lr_ramp = lr_ramp * min(1.0, t / rampup)
    return peak * lr_ramp


def noise_penalty(buffers):
    """The noise regulariser of stylegan2-ada-pytorch's projector, as written there."""
    reg_loss = 0.0
    for v in buffers:
        noise = v[None, None, :, :]
        while True:
            reg_loss += (noise * torch.roll(noise, shifts=1, dims=3)).mean() ** 2
            reg_loss += (noise * torch.roll(noise, shifts=1, dims=2)).mean() ** 2
            if noise.shape[2] <= 8:
                break
            noise = F.avg_pool2d(noise, kernel_size=2)
    return reg_loss


def reference_projection(G, target, config, network, seed):
    """Karras et al.'s projector as PTI runs it, step by step: (per-step lpips, noise_reg, loss), final w."""
    rng = torch.Generator().manual_seed(seed)  # seeding contract: z samples, then the noise buffers, in order
    z = torch.randn(config.w_avg_samples, G.z_dim, generator=rng)
    with torch.no_grad():
        w_samples = G.mapping(z, None)[:, 0, :].numpy().astype(np.float64)
    w_mean = w_samples.mean(axis=0, keepdims=True)
    w_std = float(np.sqrt(np.sum((w_samples - w_mean) ** 2) / config.w_avg_samples))
    start = G.mapping.w_avg.numpy()[None] if config.w_avg_source == "buffer" else w_mean
    w_opt = torch.tensor(start, dtype=torch.float32, requires_grad=True)
    G_work = copy.deepcopy(G)
    buffers = [b for name, b in G_work.synthesis.named_buffers() if name.endswith("noise_const")]
    for buffer in buffers:
        buffer.copy_(torch.randn(buffer.shape, generator=rng))
        buffer.requires_grad_(True)
    adam = Adam([w_opt] + buffers)
    step_rng = torch.Generator().manual_seed(seed + 1)
    history = []
    for step in range(config.num_steps):
        t = step / config.num_steps
        w_noise_scale = w_std * config.initial_noise_factor * max(0.0, 1.0 - t / config.noise_ramp_fraction) ** 2
        lr = karras_lr(step, config.num_steps, config.learning_rate, config.lr_rampup_fraction,
                       config.lr_rampdown_fraction)
        w_noise = torch.randn(w_opt.shape, generator=step_rng) * w_noise_scale
        ws = (w_opt + w_noise)[:, None, :].repeat(1, G.num_ws, 1)
        images = G_work.synthesis(ws, noise_mode="const", force_fp32=True)
        dist = lpips_distance(network, area(images, config.lpips_resolution),
                              area(target, config.lpips_resolution)).sum()
        reg = noise_penalty(buffers)
        loss = dist + config.noise_regularize_weight * reg
        gradients = torch.autograd.grad(loss, [w_opt] + buffers)
        adam.step(gradients, lr)
        with torch.no_grad():
            for buffer in buffers:
                buffer -= buffer.mean()
                buffer *= buffer.square().mean().rsqrt()
        history.append((dist.detach().item(), float(reg.detach()), loss.detach().item()))
    return torch.tensor(history, dtype=torch.float64), w_opt.detach()


@pytest.fixture(scope="module")
def one_target(G):
    return out_of_domain_targets(G, 1)[0]


@pytest.mark.parametrize("w_avg_source, lpips_resolution", [("samples", 256), ("buffer", 256), ("samples", 16)])
def test_projection_steps_match_the_reference_projector(G, one_target, vgg, w_avg_source, lpips_resolution):
    """Every recorded loss term and the final w of 8 projection steps equal Karras et al.'s projector's (LPIPS on
    images area-downsampled to lpips_resolution when they are larger)."""
    ours, network = vgg
    config = ProjectionConfig(num_steps=8, learning_rate=0.05, w_avg_samples=200, w_avg_source=w_avg_source,
                              lr_rampup_fraction=0.25, lr_rampdown_fraction=0.25, noise_ramp_fraction=0.5,
                              initial_noise_factor=0.05, preview_every=0, lpips_resolution=lpips_resolution)
    pivot = project_w(G, one_target, config, lpips=ours, seed=3)
    history, w = reference_projection(G, one_target, config, network, seed=3)
    recorded = torch.stack([pivot.loss_history[k] for k in ("lpips", "noise_reg", "loss")], dim=1).double()
    torch.testing.assert_close(recorded, history, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(pivot.w, w, rtol=0, atol=1e-4)
    assert float(history[:, 1].max()) > 0  # the noise penalty is in play (random buffers start correlated a little)


def test_projection_without_noise_optimisation_keeps_noise_out(G, one_target, vgg):
    """optimize_noise=False: no noise buffer moves, the penalty term is 0 and the loss is the LPIPS distance."""
    ours, network = vgg
    config = ProjectionConfig(num_steps=3, learning_rate=0.05, w_avg_samples=100, optimize_noise=False,
                              lr_rampup_fraction=0.0, initial_noise_factor=0.0, preview_every=0)
    pivot = project_w(G, one_target, config, lpips=ours)  # the default seed, 0
    assert torch.equal(pivot.loss_history["noise_reg"], torch.zeros(3))
    torch.testing.assert_close(pivot.loss_history["loss"], pivot.loss_history["lpips"])
    # step 0 from the W mean of the first 100 mapped samples, G's own constant noise
    z = torch.randn(100, G.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        start = G.mapping(z, None)[:, 0].mean(0, keepdim=True)
        image = G.synthesis(start[:, None].repeat(1, G.num_ws, 1), noise_mode="const", force_fp32=True)
    assert pivot.loss_history["lpips"][0].item() == pytest.approx(lpips_distance(network, image, one_target).item(),
                                                                  rel=1e-5)


def test_learning_rate_schedule_is_karras_et_al(G):
    from pti.projector import latent_noise_scale_at, learning_rate_at

    for num_steps, rampup, rampdown in ((450, 0.05, 0.25), (20, 0.25, 0.5), (7, 0.1, 0.3)):
        config = ProjectionConfig(num_steps=num_steps, learning_rate=0.1, lr_rampup_fraction=rampup,
                                  lr_rampdown_fraction=rampdown, noise_ramp_fraction=0.75, initial_noise_factor=0.05)
        for step in range(num_steps):
            assert learning_rate_at(config, step) == pytest.approx(karras_lr(step, num_steps, 0.1, rampup, rampdown),
                                                                   abs=1e-12)
            t = step / num_steps
            expected_noise = 2.0 * 0.05 * max(0.0, 1.0 - t / 0.75) ** 2
            assert latent_noise_scale_at(config, step, 2.0) == pytest.approx(expected_noise, abs=1e-12)


# ----- pivotal tuning -----------------------------------------------------------------------------------------------

def official_locality_codes(G, pivot_ws, z, alpha, psi):
    """The regulariser's codes as the official PTI code writes them (`Space_Regulizer.get_morphed_w_code`): one
    mapped, truncated w_z per z, moved from the pivot by alpha along the direction, normalised over the whole code."""
    with torch.no_grad():
        w_samples = G.mapping(z, None, truncation_psi=psi)
    codes = []
    for w_code, fixed_w in zip(w_samples, pivot_ws):
        interpolation_direction = w_code.unsqueeze(0) - fixed_w.unsqueeze(0)
        interpolation_direction_norm = torch.norm(interpolation_direction, p=2)
        codes.append(fixed_w.unsqueeze(0) + alpha * interpolation_direction / interpolation_direction_norm)
    return torch.cat(codes)


def area(images, size):
    """Box-filter downsampling to size x size (each pixel the mean of its block); None or larger: unchanged."""
    if size is None or images.shape[-1] <= size:
        return images
    factor = images.shape[-1] // size
    return images.reshape(*images.shape[:2], size, factor, size, factor).mean(dim=(3, 5))


def reference_tuning(G, targets, pivots, config, network, seed):
    """Pivotal tuning written out: per-update (lpips, l2, locality, loss) and the tuned synthesis parameters."""
    G_tuned = copy.deepcopy(G)
    parameters = dict(G_tuned.synthesis.named_parameters())
    for p in parameters.values():
        p.requires_grad_(True)
    adam = Adam(parameters.values())
    pivot_ws = torch.cat([p.ws for p in pivots])
    count = len(pivots)
    per_identity = config.multi_id_schedule == "per_identity" and count > 1
    updates = config.num_steps * count if per_identity else config.num_steps
    locality = config.locality
    rng = torch.Generator().manual_seed(seed)  # seeding contract: the z of each regularised update, in order
    history, renders = [], []
    for update in range(updates):
        chosen = [update % count] if per_identity else list(range(count))
        ws, wanted = pivot_ws[chosen], targets[chosen]
        images = G_tuned.synthesis(ws, noise_mode="const", force_fp32=True)
        lpips_values = lpips_distance(network, area(images, config.lpips_resolution),
                                      area(wanted, config.lpips_resolution))
        l2_values = l2(images, wanted)
        if (not per_identity and config.early_stop_lpips is not None
                and update % config.early_stop_check_every == 0
                and max(lpips_values.tolist()) < config.early_stop_lpips):
            break
        loss = (config.lpips_weight * lpips_values + config.l2_weight * l2_values).mean()
        locality_loss = torch.zeros(())
        if locality.enabled and locality.weight > 0 and update % locality.interval == 0:
            z = torch.randn(len(chosen) * locality.num_samples, G.z_dim, generator=rng)
            centres = ws.repeat_interleave(locality.num_samples, dim=0)
            codes = official_locality_codes(G, centres, z, locality.alpha, locality.truncation_psi)
            with torch.no_grad():
                old = G.synthesis(codes, noise_mode="const", force_fp32=True)
            new = G_tuned.synthesis(codes, noise_mode="const", force_fp32=True)
            terms = [locality.l2_weight * l2(o[None], n[None])
                     + lpips_distance(network, area(o[None], config.lpips_resolution),
                                      area(n[None], config.lpips_resolution)) for o, n in zip(old, new)]
            locality_loss = torch.cat(terms).sum() / len(terms)
            loss = loss + locality.weight * locality_loss
        gradients = torch.autograd.grad(loss, list(parameters.values()))
        adam.step(gradients, config.learning_rate)
        history.append([float(v.detach()) for v in (lpips_values.mean(), l2_values.mean(), locality_loss, loss)])
        renders.append(torch.cat(list(images.detach()), dim=-1))  # the identities side by side
    history = torch.tensor(history, dtype=torch.float64).reshape(-1, 4)
    return history, {n: p.detach() for n, p in parameters.items()}, renders


@pytest.fixture(scope="module")
def identities(G):
    """Three out-of-domain targets and, as pivots, W codes of the original generator near them."""
    targets, z = out_of_domain_targets(G, 3)
    with torch.no_grad():
        w = G.mapping(z, None)[:, 0]
    return targets, [Pivot(w=row, num_ws=G.num_ws) for row in w.split(1)]


TUNE = TuningConfig(num_steps=2, learning_rate=3e-3, early_stop_lpips=None, preview_every=1)


def assert_reports_match(reports, history, renders, config, count):
    """One progress report per update: its step, the identity it used, its losses as recorded, the identities'
    renderings (before the update) side by side as its preview."""
    per_identity = config.multi_id_schedule == "per_identity" and count > 1
    updates = config.num_steps * count if per_identity else config.num_steps
    assert [(r.phase, r.step, r.total) for r in reports] == [("tuning", i + 1, updates) for i in range(len(history))]
    for update, (report, row, render) in enumerate(zip(reports, history.tolist(), renders)):
        assert report.identity == (update % count if per_identity else None)
        regularised = config.locality.enabled and config.locality.weight > 0 and update % config.locality.interval == 0
        expected = {"lpips": row[0], "l2": row[1], "loss": row[3], **({"locality": row[2]} if regularised else {})}
        assert report.losses == pytest.approx(expected, rel=1e-4, abs=1e-6)
        preview = np.asarray(report.preview, dtype=np.int16)
        reference = ((render.clamp(-1, 1) + 1) * 127.5).round().permute(1, 2, 0).numpy().astype(np.int16)
        assert preview.shape == reference.shape and np.abs(preview - reference).max() <= 1


def assert_tuning_matches(G, targets, pivots, config, alex, seed=0):
    ours, network = alex
    seeded = {} if seed == 0 else {"seed": seed}  # seed 0: the default
    reports = []
    tuned = pivotal_tune(G, targets, pivots, config, lpips=ours, callback=reports.append, **seeded)
    history, parameters, renders = reference_tuning(G, targets, pivots, config, network, seed)
    recorded = torch.stack([tuned.loss_history[k] for k in ("lpips", "l2", "locality", "loss")], dim=1).double()
    torch.testing.assert_close(recorded, history, rtol=1e-4, atol=1e-6)
    assert_reports_match(reports, history, renders, config, len(pivots))
    assert tuned.pivots == tuple(pivots) and not any(p.requires_grad for p in tuned.generator.parameters())
    # Adam moves each weight by about the learning rate whatever its gradient's size, so where a gradient is near
    # Adam's eps, float rounding (batched against single renders) moves a weight by a fair part of that: every
    # weight within a tenth of a step, and on average within a thousandth.
    state = dict(tuned.generator.synthesis.named_parameters())
    differences = []
    for name, value in parameters.items():
        torch.testing.assert_close(state[name], value, rtol=0, atol=config.learning_rate / 10,
                                   msg=lambda message, name=name: f"{name}: {message}")
        differences.append((state[name] - value).abs().flatten())
    assert float(torch.cat(differences).mean()) < config.learning_rate / 1000
    return tuned, history


@pytest.mark.parametrize("regularised, weight", [(False, 0.1), (True, 0.1), (True, 0.0)],
                         ids=["plain", "regularised", "weight-0"])
def test_tuning_steps_of_one_identity_match_the_reference(G, identities, alex, regularised, weight):
    targets, pivots = identities
    config = dataclasses.replace(TUNE, locality=LocalityConfig(enabled=regularised, weight=weight))
    _, history = assert_tuning_matches(G, targets[:1], pivots[:1], config, alex)
    assert history[0, 2] == 0  # the first update: tuned and original generators still equal
    assert (history[1:, 2] > 0).all() == (regularised and weight > 0)


def test_tuning_lpips_on_downsampled_images_matches_the_reference(G, identities, vgg):
    """lpips_resolution 16 on the 32 px generator: LPIPS (tuning and regulariser) on area-downsampled images (with
    LPIPS-VGG: AlexNet's strides leave nothing of a 16 px image)."""
    targets, pivots = identities
    config = dataclasses.replace(TUNE, lpips_resolution=16)
    assert_tuning_matches(G, targets[:1], pivots[:1], config, vgg)


@pytest.mark.parametrize("schedule, count", [("per_identity", 3), ("per_identity", 2), ("batched", 3)])
def test_tuning_steps_of_several_identities_match_the_reference(G, identities, alex, schedule, count):
    targets, pivots = identities
    config = dataclasses.replace(TUNE, multi_id_schedule=schedule, locality=LocalityConfig(num_samples=2))
    tuned, _ = assert_tuning_matches(G, targets[:count], pivots[:count], config, alex, seed=5)
    assert tuned.steps_run == (2 * count if schedule == "per_identity" else 2)


@pytest.mark.parametrize("weights", [(0.0, 1.0), (1.0, 0.0), (0.5, 2.0)], ids=["l2-only", "lpips-only", "mixed"])
def test_each_loss_weight_acts_on_its_own_term(G, identities, alex, weights):
    """LPIPS weight 0 leaves L2 alone in the loss, and the other way round; the regulariser's L2 weight too."""
    targets, pivots = identities
    lpips_weight, l2_weight = weights
    config = dataclasses.replace(TUNE, num_steps=1, lpips_weight=lpips_weight, l2_weight=l2_weight,
                                 locality=LocalityConfig(l2_weight=l2_weight, weight=0.5))
    _, history = assert_tuning_matches(G, targets[:1], pivots[:1], config, alex)
    lpips_value, l2_value, locality_value, loss = history[0].tolist()
    assert loss == pytest.approx(lpips_weight * lpips_value + l2_weight * l2_value + 0.5 * locality_value, rel=1e-5)


def test_early_stop_waits_for_the_worst_identity(G, identities, alex):
    """The official check: stop once every identity's LPIPS is under the threshold (the largest decides)."""
    ours, network = alex
    targets, pivots = identities
    with torch.no_grad():
        start = lpips_distance(network, G.synthesis(torch.cat([p.ws for p in pivots[:2]]), noise_mode="const",
                                                    force_fp32=True), targets[:2]).tolist()
    low, high = sorted(start)
    assert high - low > 0.01, start  # the two identities straddle the threshold clearly
    base = dataclasses.replace(TUNE, num_steps=3, multi_id_schedule="batched", early_stop_check_every=1,
                               locality=LocalityConfig(enabled=False))
    between = dataclasses.replace(base, early_stop_lpips=(low + high) / 2)
    tuned, history = assert_tuning_matches(G, targets[:2], pivots[:2], between, alex)
    assert tuned.steps_run == len(history) >= 1  # the worse identity is above at first: no stop at update 0
    above = dataclasses.replace(base, early_stop_lpips=high * 1.01)
    assert pivotal_tune(G, targets[:2], pivots[:2], above, lpips=ours).steps_run == 0
    # one identity: just above its LPIPS stops at once, just below does not
    one = dataclasses.replace(base, multi_id_schedule="per_identity")
    assert pivotal_tune(G, targets[:1], pivots[:1], dataclasses.replace(one, early_stop_lpips=start[0] * 1.01),
                        lpips=ours).steps_run == 0
    assert pivotal_tune(G, targets[:1], pivots[:1], dataclasses.replace(one, early_stop_lpips=start[0] * 0.99),
                        lpips=ours).steps_run > 0


def test_early_stop_is_checked_only_every_check_every_steps(G, identities, alex):
    """Checked on updates 0, k, 2k...: with a threshold the run passes after its first update, it stops at k."""
    ours, network = alex
    targets, pivots = identities
    free = pivotal_tune(G, targets[:1], pivots[:1], dataclasses.replace(TUNE, num_steps=4, locality=LocalityConfig(
        enabled=False)), lpips=ours)
    lpips_values = free.loss_history["lpips"].tolist()  # before each update
    assert lpips_values[1] < lpips_values[0] and lpips_values[2] < lpips_values[0]
    threshold = (max(lpips_values[1:3]) + lpips_values[0]) / 2  # above updates 1 and 2, below update 0
    config = dataclasses.replace(TUNE, num_steps=4, early_stop_lpips=threshold, early_stop_check_every=2,
                                 locality=LocalityConfig(enabled=False))
    assert pivotal_tune(G, targets[:1], pivots[:1], config, lpips=ours).steps_run == 2


def test_locality_codes_are_the_official_ones(G, identities):
    """w_r = w_p + alpha (w_z - w_p) / ||w_z - w_p||, the norm over the whole (num_ws, w_dim) code; N_r per pivot."""
    from pti.tuning import locality_codes

    _, pivots = identities
    pivot_ws = torch.cat([p.ws for p in pivots[:2]])
    config = dataclasses.replace(TUNE, locality=LocalityConfig(alpha=7.0, num_samples=3, truncation_psi=0.7))
    codes = locality_codes(G, pivot_ws, config, torch.Generator().manual_seed(11))
    z = torch.randn(6, G.z_dim, generator=torch.Generator().manual_seed(11))
    expected = official_locality_codes(G, pivot_ws.repeat_interleave(3, dim=0), z, 7.0, 0.7)
    torch.testing.assert_close(codes, expected, rtol=1e-5, atol=1e-5)
    distances = (codes - pivot_ws.repeat_interleave(3, dim=0)).flatten(1).norm(dim=1)
    torch.testing.assert_close(distances, torch.full((6,), 7.0), rtol=1e-5, atol=0)
    with torch.no_grad():  # the direction is towards the truncated w_z (psi 0.7 of the way from w_avg)
        w_z = G.mapping(z, None, truncation_psi=0.7)
    direction = F.normalize((w_z - pivot_ws.repeat_interleave(3, dim=0)).flatten(1), dim=1)
    moved = F.normalize((codes - pivot_ws.repeat_interleave(3, dim=0)).flatten(1), dim=1)
    torch.testing.assert_close(moved, direction, rtol=1e-5, atol=1e-5)


def test_locality_interval_samples_and_truncation_reach_the_tuning(G, identities, alex):
    """Regularised on updates 0, 2, 4 (interval 2), 3 codes each, w_z truncated at 0.8: as the reference."""
    targets, pivots = identities
    config = dataclasses.replace(TUNE, num_steps=5, locality=LocalityConfig(interval=2, num_samples=3,
                                                                           truncation_psi=0.8, alpha=12.0))
    _, history = assert_tuning_matches(G, targets[:1], pivots[:1], config, alex, seed=4)
    assert [value > 0 for value in history[:, 2].tolist()] == [False, False, True, False, True]


def test_area_downsampling_is_the_block_mean():
    """LPIPS on large images sees them area-downsampled: each output pixel the mean of its block."""
    from pti.losses import downsample_area

    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    blocks = images.reshape(2, 3, 16, 4, 16, 4).mean(dim=(3, 5))
    torch.testing.assert_close(downsample_area(images, 16), blocks)
    assert downsample_area(images, 64) is images and downsample_area(images, 128) is images
    assert downsample_area(images, None) is images


def test_noise_penalty_and_renormalisation_written_out():
    """The pyramid penalty down to 8 x 8 px, on buffers of several sizes; renormalised buffers: mean 0, variance 1."""
    from pti.losses import noise_regularization, normalize_noise_

    rng = torch.Generator().manual_seed(3)
    buffers = [F.avg_pool2d(torch.randn(1, 1, size + 2, size + 2, generator=rng), 3, stride=1)[0, 0] * 3 + 1
               for size in (4, 8, 32)]
    assert noise_regularization(buffers).item() == pytest.approx(float(noise_penalty(buffers)), rel=1e-6)
    assert noise_regularization([]).item() == 0.0
    normalize_noise_(buffers)
    for buffer in buffers:
        assert abs(buffer.mean().item()) < 1e-6 and buffer.square().mean().item() == pytest.approx(1.0, abs=1e-5)


def test_projection_refuses_conditional_generators_and_defaults_to_pretrained_vgg(G, one_target, vgg, monkeypatch):
    from types import SimpleNamespace

    import pti.projector

    with pytest.raises(ValueError, match=r"^only unconditional generators can be projected into \(c_dim is 3\)$"):
        project_w(SimpleNamespace(c_dim=3), one_target)
    asked = []
    monkeypatch.setattr(pti.projector, "build_lpips", lambda *args, **kwargs: asked.append((args, kwargs)) or vgg[0])
    project_w(G, one_target, ProjectionConfig(num_steps=1, w_avg_samples=10, preview_every=0))
    assert asked == [(("vgg",), {"device": torch.device("cpu")})]
