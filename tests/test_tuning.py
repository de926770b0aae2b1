"""Pivotal tuning on the tiny generator: reconstruction, locality (paper's Fig. 15), multi-ID, save/load, control."""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_projector import out_of_domain_targets

from pti.config import LocalityConfig, TuningConfig
from pti.losses import build_lpips, l2_per_image
from pti.networks import Generator
from pti.progress import STOP, Cancelled
from pti.projector import Pivot, TargetError
import pti.tuning
from pti.tuning import TunedGenerator, locality_codes, pivotal_tune
from pti.weights import load_generator

# Short runs with a larger learning rate than the paper's 3e-4, so the tiny generator converges in a few dozen steps.
QUICK = TuningConfig(num_steps=40, learning_rate=3e-3, early_stop_lpips=None, preview_every=0)


@pytest.fixture(scope="module")
def G():
    return load_generator("tiny")


@pytest.fixture(scope="module")
def alex():
    return build_lpips("alex", pretrained=False)


@pytest.fixture(scope="module")
def identities(G):
    """Two out-of-domain targets and, as pivots, the original generator's W codes of the same z."""
    targets, z = out_of_domain_targets(G, 2)
    with torch.no_grad():
        w = G.mapping(z, None)[:, 0]
    return targets, [Pivot(w=row, num_ws=G.num_ws) for row in w.split(1)]


def render(G, ws):
    with torch.no_grad():
        return G.synthesis(ws, noise_mode="const", force_fp32=True)


@pytest.fixture(scope="module")
def tuned_pair(G, identities, alex):
    """The first identity tuned with and without the locality regulariser; the original state recorded before."""
    targets, pivots = identities
    original_state = {name: t.clone() for name, t in G.state_dict().items()}
    pivot_before = pivots[0].w.clone()
    with_reg = pivotal_tune(G, targets[:1], pivots[0], QUICK, lpips=alex)
    without_reg = pivotal_tune(G, targets[:1], pivots[0], dataclasses.replace(QUICK, locality=LocalityConfig(
        enabled=False)), lpips=alex)
    return {"with": with_reg, "without": without_reg, "original_state": original_state, "pivot_before": pivot_before}


def test_tuning_reconstructs_the_target(G, identities, tuned_pair):
    targets, pivots = identities
    before = l2_per_image(render(G, pivots[0].ws), targets[:1]).item()
    for tuned in (tuned_pair["with"], tuned_pair["without"]):
        after = l2_per_image(tuned.render(pivots[0]), targets[:1]).item()
        assert after <= 0.1 * before, (before, after)
        assert tuned.steps_run == QUICK.num_steps and tuned.loss_history["loss"].shape == (QUICK.num_steps,)


def test_pivot_and_original_generator_unchanged(G, identities, tuned_pair):
    assert torch.equal(identities[1][0].w, tuned_pair["pivot_before"])
    assert torch.equal(tuned_pair["with"].pivots[0].w, tuned_pair["pivot_before"])
    for name, tensor in G.state_dict().items():
        assert torch.equal(tensor, tuned_pair["original_state"][name]), name


def test_changed_parameters_are_the_synthesis_weights(G, tuned_pair):
    changed = tuned_pair["with"].changed_parameters(G)
    assert "synthesis.b32.conv1.weight" in changed and changed["synthesis.b32.conv1.weight"] > 0
    assert not any(name.startswith("mapping.") for name in changed)
    assert not any(name.endswith("noise_const") for name in changed)  # buffers, not trained


def test_locality_regulariser_keeps_far_latents_unchanged(G, identities, tuned_pair, alex):
    """The paper's Fig. 15: far from the pivot, the regularised generator changes clearly less."""
    targets, pivots = identities
    far = locality_codes(G, pivots[0].ws.repeat(32, 1, 1), QUICK, torch.Generator().manual_seed(99))
    original = render(G, far)
    change = {}
    for key in ("with", "without"):
        tuned = tuned_pair[key].render(far)
        change[key] = (l2_per_image(tuned, original).mean().item(), alex(tuned, original).mean().item())
    assert change["with"][0] < 0.75 * change["without"][0], change
    assert change["with"][1] < 0.75 * change["without"][1], change
    # ... at similar reconstruction of the target.
    before = l2_per_image(render(G, pivots[0].ws), targets[:1]).item()
    drops = [1 - l2_per_image(tuned_pair[k].render(pivots[0]), targets[:1]).item() / before for k in change]
    assert abs(drops[0] - drops[1]) < 0.05, drops


def test_multi_id_tuning_improves_every_identity(G, identities, alex):
    targets, pivots = identities
    tuned = pivotal_tune(G, targets, pivots, dataclasses.replace(QUICK, num_steps=20, learning_rate=5e-3), lpips=alex)
    before = l2_per_image(render(G, torch.cat([p.ws for p in pivots])), targets)
    after = l2_per_image(tuned.render(torch.cat([p.w for p in pivots])), targets)
    assert (after < 0.3 * before).all(), (before, after)
    assert len(tuned.pivots) == 2


def test_save_and_load_round_trip_bit_exactly(G, identities, tuned_pair, tmp_path):
    tuned = tuned_pair["with"]
    saved = tuned.save(tmp_path / "one")
    assert saved.weights.name == "tuned.safetensors" and saved.pivots.name == "pivot.npy"
    assert np.load(saved.pivots).shape == (1, G.w_dim)
    loaded = TunedGenerator.load(tmp_path / "one")
    for name, tensor in tuned.generator.state_dict().items():
        assert torch.equal(loaded.generator.state_dict()[name], tensor.cpu()), name
    assert torch.equal(loaded.pivots[0].w, tuned.pivots[0].w) and loaded.pivots[0].source == "w"
    assert torch.equal(loaded.render(loaded.pivots[0]), tuned.render(tuned.pivots[0]))
    # The weights use the reference parameter names: a plain Generator loads them strictly.
    plain = Generator(**G.init_kwargs)
    plain.load_state_dict(load_file(str(saved.weights)), strict=True)

    several = TunedGenerator(generator=tuned.generator, pivots=(tuned.pivots[0], Pivot(
        w=torch.randn(1, G.num_ws, G.w_dim), num_ws=G.num_ws, source="e4e")))
    saved = several.save(tmp_path / "two")
    assert saved.pivots.name == "pivots.npz"
    loaded = TunedGenerator.load(tmp_path / "two")
    assert [p.source for p in loaded.pivots] == ["w", "e4e"]
    assert all(torch.equal(a.w, b.w) for a, b in zip(loaded.pivots, several.pivots))


def test_load_refuses_pivots_that_do_not_match_their_recorded_sources(G, identities, tuned_pair, tmp_path):
    """A pivots file swapped for one with another number of pivots than the weights file recorded sources for."""
    from pti.tuning import TunedGeneratorFileError

    tuned = tuned_pair["with"]
    two = TunedGenerator(generator=tuned.generator, pivots=(tuned.pivots[0], Pivot(
        w=torch.zeros(1, G.num_ws, G.w_dim), num_ws=G.num_ws, source="e4e")))
    saved = two.save(tmp_path / "two")
    np.savez(saved.pivots, **{f"pivot_{i}": np.zeros((1, G.w_dim), np.float32) for i in range(3)})
    with pytest.raises(TunedGeneratorFileError, match="3 pivots but 2 recorded sources"):
        TunedGenerator.load(tmp_path / "two")
    saved.pivots.unlink()  # the weights of two identities next to the pivot file of one
    np.save(tmp_path / "two" / "pivot.npy", np.zeros((1, G.w_dim), np.float32))
    with pytest.raises(TunedGeneratorFileError, match="1 pivots but 2 recorded sources"):
        TunedGenerator.load(tmp_path / "two")
    (tmp_path / "two" / "pivot.npy").unlink()
    with pytest.raises(TunedGeneratorFileError, match="no pivot.npy or pivots.npz"):
        TunedGenerator.load(tmp_path / "two")


def test_save_makes_its_folders_writes_again_and_keeps_float32(tuned_pair, tmp_path):
    tuned = tuned_pair["with"]
    first = tuned.save(tmp_path / "new" / "nested")  # folders that do not exist yet
    again = tuned.save(tmp_path / "new" / "nested")  # and again into the same, existing folder
    assert (again.weights, again.pivots) == (first.weights, first.pivots)
    assert np.load(first.pivots).dtype == np.float32
    loaded = TunedGenerator.load(tmp_path / "new" / "nested")
    assert loaded.pivots[0].w.dtype == torch.float32


def test_to_moves_the_generator_and_returns_itself(tuned_pair):
    tuned = tuned_pair["with"]
    moved = TunedGenerator(generator=copy.deepcopy(tuned.generator), pivots=tuned.pivots)
    assert moved.to("meta") is moved
    assert all(p.device.type == "meta" for p in moved.generator.parameters())


def test_load_without_recorded_sources_refuses_pickles_and_stays_frozen(G, tmp_path):
    """Weights written without the pivot sources (e.g. by `save_generator` alone): the pivots are 'loaded'; a pivot
    file holding pickled objects is refused; the loaded generator is frozen."""
    from pti.generator_io import save_generator

    save_generator(G, tmp_path / "tuned.safetensors")
    np.save(tmp_path / "pivot.npy", np.ones((1, G.w_dim), np.float32))
    loaded = TunedGenerator.load(tmp_path)
    assert [p.source for p in loaded.pivots] == ["loaded"] and loaded.pivots[0].w.shape == (1, G.w_dim)
    assert not any(p.requires_grad for p in loaded.generator.parameters())
    (tmp_path / "pivot.npy").unlink()
    np.savez(tmp_path / "pivots.npz", pivot_0=np.zeros((1, G.w_dim), np.float32), pivot_1=np.ones((1, G.w_dim)))
    assert [p.source for p in TunedGenerator.load(tmp_path).pivots] == ["loaded", "loaded"]
    (tmp_path / "pivots.npz").unlink()
    np.save(tmp_path / "pivot.npy", np.array([{"not": "numbers"}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle"):
        TunedGenerator.load(tmp_path)
    (tmp_path / "pivot.npy").unlink()
    np.savez(tmp_path / "pivots.npz", pivot_0=np.array([{"not": "numbers"}], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        TunedGenerator.load(tmp_path)


def test_load_reports_missing_files(tmp_path):
    from pti.tuning import TunedGeneratorFileError

    with pytest.raises(TunedGeneratorFileError, match="no tuned.safetensors"):
        TunedGenerator.load(tmp_path)


def test_render_accepts_w_wplus_and_pivots(tuned_pair):
    tuned = tuned_pair["with"]
    pivot = tuned.pivots[0]
    expected = tuned.render(pivot.ws)
    assert torch.equal(tuned.render(pivot.w), expected)
    assert torch.equal(tuned.render(pivot), expected)
    assert expected.shape == (1, 3, 32, 32)


def test_cancel_stops_within_one_step_and_keeps_the_original(G, identities, alex):
    targets, pivots = identities
    state = {name: t.clone() for name, t in G.state_dict().items()}
    steps = []

    def callback(progress):
        steps.append(progress.step)
        return STOP

    with pytest.raises(Cancelled) as raised:
        pivotal_tune(G, targets[:1], pivots[0], QUICK, lpips=alex, callback=callback)
    assert raised.value.phase == "tuning" and raised.value.step == 1 and steps == [1]
    assert all(torch.equal(t, state[n]) for n, t in G.state_dict().items())


def test_same_seed_same_result_and_wplus_pivots(G, identities, alex):
    targets, pivots = identities
    config = dataclasses.replace(QUICK, num_steps=3)
    wplus = pivots[0].ws + 0.1 * torch.randn(1, G.num_ws, G.w_dim, generator=torch.Generator().manual_seed(1))
    runs = [pivotal_tune(G, targets[:1], wplus, config, lpips=alex, seed=seed) for seed in (3, 3, 4)]
    assert runs[0].pivots[0].is_wplus
    states = [run.generator.state_dict() for run in runs]
    assert all(torch.equal(states[0][n], states[1][n]) for n in states[0])
    assert not all(torch.equal(states[0][n], states[2][n]) for n in states[0])  # other random w_r: other result


def test_early_stop(G, identities, alex):
    targets, pivots = identities
    config = dataclasses.replace(QUICK, num_steps=5, early_stop_lpips=10.0, early_stop_check_every=1)
    stopped = pivotal_tune(G, targets[:1], pivots[0], config, lpips=alex)
    assert stopped.steps_run == 0 and stopped.changed_parameters(G) == {}


def test_default_lpips_is_the_pretrained_alexnet_on_the_tuning_device(G, identities, alex, monkeypatch):
    targets, pivots = identities
    asked = []
    monkeypatch.setattr(pti.tuning, "build_lpips", lambda *args, **kwargs: asked.append((args, kwargs)) or alex)
    pivotal_tune(G, targets[:1], pivots[0], dataclasses.replace(QUICK, num_steps=1))
    assert asked == [(("alex",), {"device": torch.device("cpu")})]


def test_pivots_and_targets_in_every_accepted_form(G, identities):
    from pti.images import tensor_to_pil
    from pti.tuning import _as_pivots, _as_targets

    targets, pivots = identities
    w = torch.cat([p.w for p in pivots])  # (2, w_dim)
    for given, shapes in ((w[0], [(1, G.w_dim)]), (w, [(1, G.w_dim)] * 2),
                          (pivots[0].ws.repeat(2, 1, 1), [(1, G.num_ws, G.w_dim)] * 2), (pivots[1], [(1, G.w_dim)]),
                          ([w[:1], pivots[1]], [(1, G.w_dim)] * 2)):
        result = _as_pivots(given, G.num_ws)
        assert [tuple(p.w.shape) for p in result] == shapes and all(p.num_ws == G.num_ws for p in result)
    loaded = _as_pivots(w, G.num_ws)
    assert [p.source for p in loaded] == ["loaded", "loaded"] and torch.equal(loaded[1].w, w[1:])
    assert loaded[0].w.dtype == torch.float32 and not loaded[0].w.requires_grad
    assert _as_pivots(pivots[1], G.num_ws)[0] is pivots[1]
    with pytest.raises(ValueError, match=r"^a pivot for a generator with 4 W\+ layers given to one with 8$"):
        _as_pivots(Pivot(w=torch.zeros(1, 4, G.w_dim), num_ws=4), G.num_ws)
    assert torch.equal(_as_targets(targets, 32), targets)
    assert torch.equal(_as_targets(targets[:1], 32), targets[:1])
    assert torch.equal(_as_targets([targets[0:1], targets[1:2]], 32), targets)
    from_image = _as_targets(tensor_to_pil(targets[:1])[0], 32)
    assert from_image.shape == (1, 3, 32, 32) and (from_image - targets[:1]).abs().max() <= 1 / 127.5 + 1e-6


def test_bad_inputs_raise_clear_errors(G, identities, alex):
    targets, pivots = identities
    with pytest.raises(TargetError, match=r"^2 target\(s\) but 1 pivot\(s\): give one pivot per target$"):
        pivotal_tune(G, targets, pivots[:1], QUICK, lpips=alex)
    with pytest.raises(ValueError, match="4 W\\+ layers"):
        pivotal_tune(G, targets[:1], Pivot(w=torch.zeros(1, 4, G.w_dim), num_ws=4), QUICK, lpips=alex)


@pytest.fixture(scope="module")
def three(G):
    """Three out-of-domain targets and their pivots (the original generator's W codes of the same z)."""
    targets, z = out_of_domain_targets(G, 3)
    with torch.no_grad():
        w = G.mapping(z, None)[:, 0]
    return targets, [Pivot(w=row, num_ws=G.num_ws) for row in w.split(1)]


def adam_reference(G, alex, batches, learning_rate):
    """Independent reference: torch's Adam on a copy's synthesis weights, one update per (targets, ws) batch on
    the paper's loss without the regulariser, mean over the batch of LPIPS + L2."""
    tuned = copy.deepcopy(G).requires_grad_(False)
    tuned.synthesis.requires_grad_(True)
    optimizer = torch.optim.Adam(tuned.synthesis.parameters(), lr=learning_rate)
    for targets, ws in batches:
        images = tuned.synthesis(ws, noise_mode="const", force_fp32=True)
        loss = (alex(images, targets) + (images - targets).square().mean(dim=(1, 2, 3))).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return tuned.state_dict()


def assert_same_weights(tuned, expected, learning_rate):
    """Equal to within 1 % of one Adam step (each moves a weight by about the learning rate; float rounding of
    batched against single renders moves weights by ~0.1 % of it, where Adam divides tiny gradients by their size)."""
    state = tuned.generator.state_dict()
    for name, value in expected.items():
        torch.testing.assert_close(state[name], value, rtol=0, atol=learning_rate / 100,
                                   msg=lambda message, name=name: f"{name}: {message}")


def test_multi_id_default_is_the_official_schedule(G, three, alex):
    """The official multi-ID coach: num_steps epochs over the identities, one Adam step per identity, in order."""
    targets, pivots = three
    config = dataclasses.replace(QUICK, num_steps=2, locality=LocalityConfig(enabled=False))
    assert config.multi_id_schedule == "per_identity"
    reports = []
    tuned = pivotal_tune(G, targets, pivots, config, lpips=alex, callback=reports.append)
    assert [(r.step, r.total, r.identity) for r in reports] == [(1, 6, 0), (2, 6, 1), (3, 6, 2), (4, 6, 0),
                                                                (5, 6, 1), (6, 6, 2)]
    assert tuned.steps_run == 6 and tuned.loss_history["loss"].shape == (6,)
    batches = [(targets[i:i + 1], pivots[i].ws) for i in (0, 1, 2, 0, 1, 2)]
    assert_same_weights(tuned, adam_reference(G, alex, batches, config.learning_rate), config.learning_rate)


def test_batched_schedule_is_one_step_on_the_mean_loss(G, three, alex):
    targets, pivots = three
    config = dataclasses.replace(QUICK, num_steps=3, multi_id_schedule="batched", locality=LocalityConfig(
        enabled=False))
    reports = []
    tuned = pivotal_tune(G, targets, pivots, config, lpips=alex, callback=reports.append)
    assert [(r.step, r.total, r.identity) for r in reports] == [(1, 3, None), (2, 3, None), (3, 3, None)]
    assert tuned.steps_run == 3
    ws = torch.cat([p.ws for p in pivots])
    assert_same_weights(tuned, adam_reference(G, alex, [(targets, ws)] * 3, config.learning_rate),
                        config.learning_rate)


def test_per_identity_schedule_never_stops_early(G, three, alex):
    targets, pivots = three
    config = dataclasses.replace(QUICK, num_steps=2, early_stop_lpips=10.0, early_stop_check_every=1)
    assert pivotal_tune(G, targets, pivots, config, lpips=alex).steps_run == 6
    batched = pivotal_tune(G, targets, pivots, dataclasses.replace(config, multi_id_schedule="batched"), lpips=alex)
    assert batched.steps_run == 0  # the batched option keeps the early stop


def test_per_identity_regulariser_every_interval_updates_around_that_identity(G, three, alex, monkeypatch):
    """As the official coach: the first update regularised, then every `interval` updates counted across
    identities (interval 2 over 3 identities: updates 1, 3, 5 -> identities 0, 2, 1), codes around that pivot."""
    targets, pivots = three
    centres = []

    def recording_codes(G_original, pivot_ws, config, generator):
        centres.append(pivot_ws.clone())
        return locality_codes(G_original, pivot_ws, config, generator)

    monkeypatch.setattr(pti.tuning, "locality_codes", recording_codes)
    config = dataclasses.replace(QUICK, num_steps=2, locality=LocalityConfig(interval=2))
    reports = []
    pivotal_tune(G, targets, pivots, config, lpips=alex, callback=reports.append)
    assert [(r.step, r.identity) for r in reports if "locality" in r.losses] == [(1, 0), (3, 2), (5, 1)]
    assert len(centres) == 3
    for centre, identity in zip(centres, (0, 2, 1)):
        assert torch.equal(centre, pivots[identity].ws)
