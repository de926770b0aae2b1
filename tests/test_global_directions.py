"""Text edits (StyleCLIP global directions): the direction against the authors' formulas, StyleSpace offsets in the
generator, the std of s, the CLIP text encoding, the registry entries, and text edits in the chain."""
from __future__ import annotations

import dataclasses
import io
import json
import re

import numpy as np
import pytest
import torch
from huggingface_hub import constants as hf_constants
from hub_server import COMMIT, FakeHub, HubFile

import pti.networks
from editing_directions import (Edit, EditChain, EditLibrary, EditStrengthError, EditSyntaxError, TextEditError,
                                cached_style_std, demo_library, global_direction, load_fs3, style_std)
from editing_directions.clip_text import CLIP_KEY, LEFT_OUT_TEMPLATES, imagenet_templates, load_text_encoder, \
    random_text_encoder
from editing_directions.errors import DirectionFileError
from editing_directions.global_directions import FS3_KEY
from pti.networks import GeneratorInputError
from pti.weights import REGISTRY, WeightsError, resolve


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path, monkeypatch):
    """Our cache in a temporary folder, the Hub client online (it only reaches loopback servers)."""
    monkeypatch.setenv("PTI_CACHE_DIR", str(tmp_path / "pti-cache"))
    monkeypatch.delenv("PTI_WEIGHTS_DIR", raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)


@pytest.fixture(scope="module")
def text_encoder():
    """A tiny random open_clip text tower (16-d features) with the real tokenizer: nothing downloaded."""
    return random_text_encoder(embed_dim=16, seed=3)


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


# ---------------------------------------------------------------------------------------------------------
# The direction, against an oracle written from the formulas


def oracle(fs3, t_neutral, t_target, beta, layer_std):
    """The authors' steps one channel at a time: dt = normalize(t - n); r_j = fs3_j . dt; 0 where |r_j| < beta;
    r / max|r|; channel j of layer l times std_l[j]."""
    dt = [a - b for a, b in zip(t_target, t_neutral)]
    length = sum(v * v for v in dt) ** 0.5
    dt = [v / length for v in dt]
    relevance = [sum(f * d for f, d in zip(row, dt)) for row in fs3]
    kept = [r if abs(r) >= beta else 0.0 for r in relevance]
    largest = max(abs(r) for r in kept)
    layers, index = [], 0
    for std in layer_std:
        layers.append([kept[index + j] / largest * std[j] for j in range(len(std))])
        index += len(std)
    return layers, sum(1 for r in kept if r != 0.0)


@pytest.mark.parametrize("beta", [0.05, 0.15, 0.3, 0.45])
def test_direction_matches_the_formulas(beta):
    rng = np.random.default_rng(7)
    sizes = (5, 9, 3, 7)
    fs3 = unit(rng.standard_normal((sum(sizes), 6)))
    neutral, target = unit(rng.standard_normal(6)), unit(rng.standard_normal(6))
    layer_std = [rng.uniform(0.5, 2.0, size) for size in sizes]
    expected, expected_channels = oracle(fs3.tolist(), neutral.tolist(), target.tolist(), beta,
                                         [s.tolist() for s in layer_std])
    delta_s, channels = global_direction(fs3, neutral, target, beta=beta, layer_std=layer_std)
    assert channels == expected_channels and 0 < channels < sum(sizes)
    assert [len(layer) for layer in delta_s] == list(sizes)
    assert all(layer.dtype == np.float32 for layer in delta_s)
    for got, want in zip(delta_s, expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    relevance = np.abs(fs3 @ ((target - neutral) / np.linalg.norm(target - neutral)))
    flat = np.concatenate(delta_s)
    assert np.all(flat[relevance < beta] == 0) and np.all(flat[relevance >= beta] != 0)
    scaled = np.concatenate([layer / std for layer, std in zip(delta_s, layer_std)])
    assert np.abs(scaled).max() == pytest.approx(1.0)  # the most relevant channel moves by one std


def test_direction_refuses_a_beta_that_keeps_nothing_and_equal_features():
    rng = np.random.default_rng(1)
    fs3 = unit(rng.standard_normal((12, 6)))
    neutral, target = unit(rng.standard_normal(6)), unit(rng.standard_normal(6))
    layer_std = [np.ones(4), np.ones(8)]
    with pytest.raises(TextEditError, match="keeps no channel.*lower beta"):
        global_direction(fs3, neutral, target, beta=1.01, layer_std=layer_std)
    with pytest.raises(TextEditError, match="same CLIP features"):
        global_direction(fs3, neutral, neutral.copy(), beta=0.1, layer_std=layer_std)
    with pytest.raises(TextEditError, match="do not fit"):
        global_direction(fs3, neutral, target, beta=0.1, layer_std=[np.ones(4)])


# ---------------------------------------------------------------------------------------------------------
# StyleSpace offsets in the generator


def test_style_layers_are_the_conv_layers(tiny_generator):
    synthesis = tiny_generator.synthesis
    names = [name for name, _ in synthesis.style_layers()]
    assert names == ["b4.conv1", "b8.conv0", "b8.conv1", "b16.conv0", "b16.conv1", "b32.conv0", "b32.conv1"]
    assert synthesis.style_channels() == tuple(layer.weight.shape[1] for _, layer in synthesis.style_layers())
    assert synthesis.style_channels() == (32, 32, 32, 32, 32, 32, 16)


def test_zero_offsets_render_exactly_the_unedited_image(tiny_generator):
    ws = tiny_generator.mapping(torch.randn(2, tiny_generator.z_dim, generator=torch.Generator().manual_seed(0)), None)
    plain = tiny_generator.synthesis(ws, noise_mode="const")
    zeros = [torch.zeros(count) for count in tiny_generator.synthesis.style_channels()]
    assert torch.equal(tiny_generator.synthesis(ws, noise_mode="const", style_offsets=zeros), plain)
    assert torch.equal(tiny_generator.synthesis(ws, noise_mode="const", style_offsets=[None] * len(zeros)), plain)


def recorded_styles(monkeypatch, G, ws, offsets):
    """The `styles` every modulated convolution receives in one render (conv layers and ToRGB, in call order)."""
    seen = []
    original = pti.networks.modulated_conv2d

    def recording(x, weight, styles, *args, **kwargs):
        seen.append(styles.detach().clone())
        return original(x, weight, styles, *args, **kwargs)

    monkeypatch.setattr(pti.networks, "modulated_conv2d", recording)
    G.synthesis(ws, noise_mode="const", style_offsets=offsets)
    monkeypatch.setattr(pti.networks, "modulated_conv2d", original)
    return seen


@pytest.mark.parametrize("layer", [0, 3, 6])
def test_an_offset_on_one_layer_changes_that_layers_style_only(monkeypatch, tiny_generator, layer):
    G = tiny_generator
    ws = G.mapping(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(1)), None)
    channels = G.synthesis.style_channels()
    offset = torch.randn(channels[layer], generator=torch.Generator().manual_seed(2))
    offsets = [offset if index == layer else None for index in range(len(channels))]
    before = recorded_styles(monkeypatch, G, ws, None)
    after = recorded_styles(monkeypatch, G, ws, offsets)
    # Calls in order: b4.conv1, b4.torgb, then conv0, conv1, torgb per block: the conv calls are the style layers.
    conv_calls = [0] + [call for block in range(1, 4) for call in (3 * block - 1, 3 * block)]
    assert len(before) == len(after) == len(channels) + 4
    for call, (old, new) in enumerate(zip(before, after)):
        if call == conv_calls[layer]:
            torch.testing.assert_close(new, old + offset, rtol=0, atol=1e-6)
        else:
            assert torch.equal(new, old), call
    assert not torch.equal(G.synthesis(ws, noise_mode="const"), G.synthesis(ws, noise_mode="const",
                                                                            style_offsets=offsets))


def test_offsets_apply_after_the_affine_of_an_edited_w_and_per_sample(monkeypatch, tiny_generator):
    G = tiny_generator
    ws = G.mapping(torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(4)), None)
    edited = ws + 0.5 * torch.randn(G.w_dim, generator=torch.Generator().manual_seed(5))
    channels = G.synthesis.style_channels()
    offsets = [torch.randn(2, count, generator=torch.Generator().manual_seed(10 + i)) for i, count in
               enumerate(channels)]
    seen = recorded_styles(monkeypatch, G, edited, offsets)
    conv_calls = [0] + [call for block in range(1, 4) for call in (3 * block - 1, 3 * block)]
    expected = [s + o for s, o in zip(G.synthesis.styles(edited), offsets)]
    for call, want in zip(conv_calls, expected):
        torch.testing.assert_close(seen[call], want, rtol=0, atol=1e-6)
    with pytest.raises(GeneratorInputError, match=r"style_offsets\[2\] must have shape \(32,\) or \(2, 32\)"):
        G.synthesis(ws, style_offsets=[None, None, torch.zeros(3), *[None] * 4])
    with pytest.raises(GeneratorInputError, match="one entry per conv layer"):
        G.synthesis(ws, style_offsets=[None])


# ---------------------------------------------------------------------------------------------------------
# The per-layer std of s


def test_std_matches_a_direct_computation(tiny_generator):
    G = tiny_generator
    samples = 1_500
    z = torch.from_numpy(np.random.RandomState(5).randn(samples, G.z_dim))
    with torch.no_grad():
        ws = G.mapping(z, None, truncation_psi=0.7, truncation_cutoff=8)
        convs = [layer for _, layer in G.synthesis.style_layers()]
        direct = [layer.affine(ws[:, index]).numpy().std(axis=0) for index, layer in enumerate(convs)]
    computed = style_std(G, samples=samples, chunk=400)  # chunks that do not divide the samples
    assert [len(std) for std in computed] == list(G.synthesis.style_channels())
    for got, want in zip(computed, direct):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_std_is_computed_once_and_kept_as_safetensors(tiny_generator, tmp_path, monkeypatch):
    first = cached_style_std(tiny_generator, cache_dir=tmp_path, samples=500)
    files = list(tmp_path.glob("style-std-*.safetensors"))
    assert len(files) == 1
    monkeypatch.setattr("editing_directions.global_directions.style_std",
                        lambda *a, **k: pytest.fail("the cached std should have been read"))
    again = cached_style_std(tiny_generator, cache_dir=tmp_path, samples=500)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    # Other settings or other weights are another file.
    monkeypatch.undo()
    cached_style_std(tiny_generator, cache_dir=tmp_path, samples=400)
    with torch.no_grad():
        tiny_generator.synthesis.b8.conv0.affine.bias.add_(0.1)
    cached_style_std(tiny_generator, cache_dir=tmp_path, samples=500)
    assert len(list(tmp_path.glob("style-std-*.safetensors"))) == 3


# ---------------------------------------------------------------------------------------------------------
# CLIP text features


def test_templates_are_open_clips_less_the_one_the_authors_left_out():
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    templates = [t("X") for t in imagenet_templates()]
    shipped = [t("X") for t in OPENAI_IMAGENET_TEMPLATES]
    assert len(shipped) == 80 and len(templates) == 79
    assert templates == [t for t in shipped if t not in {left.format("X") for left in LEFT_OUT_TEMPLATES}]


def test_encoding_averages_the_normalised_template_features(text_encoder):
    import open_clip

    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    texts = [template("a smiling face") for template in imagenet_templates()]
    with torch.no_grad():
        features = text_encoder.model.encode_text(tokenizer(texts)).double()
    per_template = features / features.norm(dim=1, keepdim=True)
    expected = per_template.mean(dim=0)
    expected = (expected / expected.norm()).numpy()
    got = text_encoder.encode("  a smiling   face ")  # whitespace tidied: the same sentence
    assert got.shape == (16,) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert np.linalg.norm(got) == pytest.approx(1.0, abs=1e-6)
    assert not np.allclose(got, per_template[0].numpy(), atol=1e-3)  # not just one template


def test_features_are_cached_per_sentence(monkeypatch):
    encoder = random_text_encoder(embed_dim=16, seed=3)
    calls = []
    original = encoder.model.encode_text
    monkeypatch.setattr(encoder.model, "encode_text", lambda tokens: calls.append(len(tokens)) or original(tokens))
    first = encoder.encode("grey hair")
    assert encoder.encode("grey hair") is first and calls == [79]
    encoder.encode("a face")
    assert calls == [79, 79]


def test_bad_sentences_say_how_to_fix_them(text_encoder):
    with pytest.raises(TextEditError, match="empty; type a short description"):
        text_encoder.encode("   ")
    with pytest.raises(TextEditError, match=r"too long for CLIP.*of the 75 tokens.*shorten it to at most about \d+ tokens"):
        text_encoder.encode("a face with " + "very " * 70 + "long hair")
    text_encoder.encode("a face with " + "very " * 50 + "long hair")  # long, but it fits every template


# ---------------------------------------------------------------------------------------------------------
# Registry entries, served by the loopback Hub


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def test_fs3_and_clip_are_registered_with_their_checks():
    fs3 = REGISTRY[FS3_KEY]
    assert (fs3.repo_id, fs3.filename, fs3.size) == ("AIRI-Institute/StyleFeatureEditor", "pretrained_models/fs3.npy",
                                                     6_193_280)
    assert fs3.sha256_prefix == "7260766e" and fs3.licence and fs3.description
    clip = REGISTRY[CLIP_KEY]
    assert (clip.repo_id, clip.filename) == ("timm/vit_base_patch32_clip_224.openai", "open_clip_model.safetensors")
    assert len(clip.revision) == 40  # a pinned commit


def test_fs3_comes_from_the_hub_and_a_wrong_file_is_rejected(tmp_path):
    rng = np.random.default_rng(0)
    array = unit(rng.standard_normal((224, 16))).astype(np.float16)
    served = HubFile(REGISTRY[FS3_KEY].repo_id, REGISTRY[FS3_KEY].filename, npy_bytes(array))
    entry = dataclasses.replace(REGISTRY[FS3_KEY], size=len(served.content), sha256_prefix=served.sha256[:8])
    with FakeHub(served) as hub:
        path = resolve(entry, cache_dir=tmp_path / "hf", endpoint=hub.url, progress=False)
        np.testing.assert_array_equal(load_fs3(path, channels=224), array.astype(np.float32))
        assert hub.requests[0] == ("HEAD", f"/{entry.repo_id}/resolve/{entry.revision}/{entry.filename}")
        # The registry's own entry: this file has neither the size nor the sha256 of the authors' fs3.
        with pytest.raises(WeightsError, match="6193280 were expected"):
            resolve(REGISTRY[FS3_KEY], cache_dir=tmp_path / "hf2", endpoint=hub.url, progress=False)
        same_size = dataclasses.replace(REGISTRY[FS3_KEY], size=len(served.content))
        with pytest.raises(WeightsError, match=f"sha256 {served.sha256} but one starting 7260766e"):
            resolve(same_size, cache_dir=tmp_path / "hf3", endpoint=hub.url, progress=False)
    with pytest.raises(DirectionFileError, match="224 rows but the generator's conv layers have 6048"):
        load_fs3(path, channels=6048)
    pickled = tmp_path / "pickled.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DirectionFileError, match="without pickled objects"):
        load_fs3(pickled)


def test_clip_weights_come_from_the_pinned_revision_and_a_wrong_file_is_refused(tmp_path):
    from safetensors.torch import save

    entry = REGISTRY[CLIP_KEY]
    served = HubFile(entry.repo_id, entry.filename, save({"x": torch.zeros(3)}))
    with FakeHub(served) as hub:  # serves 'main' and its one commit only
        with pytest.raises(WeightsError, match=f"revision {entry.revision}"):
            resolve(entry, cache_dir=tmp_path / "hf", endpoint=hub.url, progress=False)
        assert hub.requests[0] == ("HEAD", f"/{entry.repo_id}/resolve/{entry.revision}/{entry.filename}")
        path = resolve(dataclasses.replace(entry, revision=COMMIT), cache_dir=tmp_path / "hf", endpoint=hub.url,
                       progress=False)
    with pytest.raises(DirectionFileError, match="not open_clip's ViT-B-32-quickgelu weights"):
        load_text_encoder(path)
    (tmp_path / "broken.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(DirectionFileError, match="unreadable CLIP safetensors file"):
        load_text_encoder(tmp_path / "broken.safetensors")


# ---------------------------------------------------------------------------------------------------------
# Text edits in the library and the chain


@pytest.fixture()
def library(tiny_generator):
    return demo_library(tiny_generator.w_dim, tiny_generator.num_ws, generator=tiny_generator)


def test_text_edits_stack_with_the_other_kinds_and_replay(library, tiny_generator):
    G = tiny_generator
    w = G.mapping(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(8)), None)
    smile = Edit.text("a smiling face", 4.1)
    grey = Edit.parse("text:a face->grey hair=-2.5,0.1")
    chain = EditChain(library, [Edit.parse("smile=1"), smile, Edit.parse("styleclip:demo_1=0.1"), grey])
    images = chain.render_tensor(G, w)
    # By hand: W+ edits as without the text edits, then per step the sum of the text offsets so far.
    codes = torch.cat(chain.steps(w))
    first, second = (library.text_direction(edit) for edit in (smile, grey))
    assert 0 < first.channels < sum(G.synthesis.style_channels())
    assert torch.equal(codes[1], codes[2])  # a text edit leaves W+ as it is
    rows = []
    for step in range(5):
        rows.append([torch.from_numpy(a) * 4.1 * (step >= 2) + torch.from_numpy(b) * -2.5 * (step >= 4)
                     for a, b in zip(first.delta_s, second.delta_s)])
    offsets = [torch.stack([row[layer] for row in rows]) for layer in range(len(first.delta_s))]
    expected = G.synthesis(codes, noise_mode="const", style_offsets=offsets)
    torch.testing.assert_close(images, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(images[0], G.synthesis(w, noise_mode="const")[0], rtol=0, atol=1e-5)
    assert not torch.allclose(images[1], images[2])
    replayed = EditChain.from_json(chain.to_json(), library)
    assert replayed.edits == chain.edits
    assert torch.equal(replayed.render_tensor(G, w), images)
    record = json.loads(chain.to_json())["edits"][3]
    assert record == {"kind": "text", "name": "grey hair", "strength": -2.5, "neutral": "a face", "beta": 0.1}


def test_text_edit_text_form_round_trips():
    edit = Edit.parse("text:a face->a face with glasses=3.5,0.2")
    assert (edit.neutral, edit.name, edit.strength, edit.beta) == ("a face", "a face with glasses", 3.5, 0.2)
    assert Edit.parse(edit.to_text()) == edit
    assert Edit.parse("text:grey hair=2") == Edit.text("grey hair", 2.0)
    assert edit.slug == "text-a_face_with_glasses+3.5"
    with pytest.raises(EditSyntaxError, match="expected text:"):
        Edit.parse("text:grey hair")
    with pytest.raises(EditSyntaxError, match="only text edits have a neutral"):
        Edit("interfacegan", "smile", 1.0, neutral="a face")


def test_bad_text_edits_are_refused_with_the_fix(library):
    with pytest.raises(EditSyntaxError, match="target sentence of the text edit is empty"):
        Edit.text(" ", 4.1)
    with pytest.raises(EditSyntaxError, match="neutral sentence of the text edit is empty"):
        Edit.text("grey hair", 4.1, neutral="")
    with pytest.raises(EditSyntaxError, match="same as the neutral one"):
        Edit.text("A  face", 4.1)
    with pytest.raises(EditStrengthError, match=r"alpha|strength 11 is outside the allowed range \[-10, 10\]"):
        library.validate(Edit.text("grey hair", 11))
    with pytest.raises(EditStrengthError, match=r"beta 0.5 is outside the allowed range \[0.08, 0.3\]"):
        library.validate(Edit.text("grey hair", 4, beta=0.5))
    with pytest.raises(TextEditError, match="target sentence is too long"):
        library.text_direction(Edit.text("a face with " + "very " * 70 + "long hair", 4))
    chain = EditChain(library, [Edit.parse("smile=1")])
    with pytest.raises(EditStrengthError):
        chain.append(Edit.text("grey hair", 4, beta=0.9))
    assert len(chain) == 1


@pytest.mark.parametrize("score, beta, kept", [(0.05, 0.08, False), (0.2, 0.15, True), (0.2, 0.25, False)])
def test_a_beta_that_keeps_no_channel_names_the_fix(tiny_generator, text_encoder, score, beta, kept):
    G = tiny_generator
    neutral, target = text_encoder.encode("a face"), text_encoder.encode("grey hair")
    dt = unit(target - neutral)
    other = unit(np.eye(16)[0] - np.eye(16)[0] @ dt * dt)  # a unit vector orthogonal to dt
    row = score * dt + np.sqrt(1 - score ** 2) * other  # every channel scores exactly `score`
    fs3 = np.tile(row, (sum(G.synthesis.style_channels()), 1))
    library = EditLibrary.from_tensors(fs3=fs3, text_encoder=text_encoder, layer_std=style_std(G, samples=200))
    edit = Edit.text("grey hair", 4, beta=beta)
    if kept:
        assert library.text_direction(edit).channels == len(fs3)
    else:
        with pytest.raises(TextEditError, match=f"beta {beta:g} keeps no channel: the most relevant channel "
                                                f"scores {score:.3f}; lower beta below that"):
            library.text_direction(edit)


# ---------------------------------------------------------------------------------------------------------
# On a GPU (skipped without CUDA)


@pytest.mark.gpu
@pytest.mark.parametrize("force_fp32", [True, False])
def test_style_offsets_on_cuda_with_both_ops_match_the_cpu(tiny_generator, monkeypatch, force_fp32):
    from pti.ops.cuda_plugin import IMPL_ENV_VAR, load_cuda_extension

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    G = tiny_generator
    ws = G.mapping(torch.randn(3, G.z_dim, generator=torch.Generator().manual_seed(6)), None)
    offsets = [torch.randn(3, count, generator=torch.Generator().manual_seed(20 + i)) for i, count in
               enumerate(G.synthesis.style_channels())]
    on_cpu = G.synthesis(ws, noise_mode="const", style_offsets=offsets)
    G = G.to("cuda")
    for impl in ("ref", "auto"):
        if impl == "ref":
            monkeypatch.setenv(IMPL_ENV_VAR, "ref")
        else:
            monkeypatch.delenv(IMPL_ENV_VAR, raising=False)
            assert load_cuda_extension() is not None, "the CUDA ops plugin did not build"
        zeros = [torch.zeros(count, device="cuda") for count in G.synthesis.style_channels()]
        plain = G.synthesis(ws.cuda(), noise_mode="const", force_fp32=force_fp32)
        assert torch.equal(G.synthesis(ws.cuda(), noise_mode="const", force_fp32=force_fp32, style_offsets=zeros),
                           plain)
        edited = G.synthesis(ws.cuda(), noise_mode="const", force_fp32=force_fp32, style_offsets=offsets).cpu()
        assert (edited - on_cpu).abs().max() < (1e-4 if force_fp32 else 5e-2), impl


def test_prepare_text_loads_everything_once(tiny_generator):
    loads = []
    fs3 = unit(np.random.default_rng(2).standard_normal((208, 16)))

    def encoder():
        loads.append("encoder")
        return random_text_encoder(embed_dim=16, seed=3)

    library = EditLibrary.from_tensors(fs3=fs3, text_encoder=encoder, layer_std=style_std(tiny_generator, samples=50))
    assert loads == []  # nothing is built with the library
    library.prepare_text()
    assert loads == ["encoder"]
    library.text_direction(Edit.text("grey hair", 4.1))
    assert loads == ["encoder"]


# ---------------------------------------------------------------------------------------------------------
# Edge cases of the direction, fs3 files and the std cache (mutation testing, #18)


def test_a_channel_scoring_exactly_beta_is_kept_and_features_may_come_as_rows():
    # dt = (1, 0, 0): a row's relevance is its first entry, exactly 0.25 or 0.125 (binary fractions)
    fs3 = np.array([[0.25, np.sqrt(1 - 0.25 ** 2), 0.0], [-0.25, 0.0, np.sqrt(1 - 0.25 ** 2)],
                    [0.125, 0.0, np.sqrt(1 - 1 / 64)]])
    neutral, target = np.array([[0.0, 0.6, 0.8]]), np.array([[1.0, 0.6, 0.8]])  # (1, D) rows, as CLIP returns them
    delta_s, channels = global_direction(fs3, neutral, target, beta=0.25, layer_std=[np.array([2.0, 3.0, 5.0])])
    assert channels == 2  # |r| == beta is kept (the authors drop |r| < beta only)
    np.testing.assert_array_equal(delta_s[0], np.array([2.0, -3.0, 0.0], dtype=np.float32))


def test_equal_features_name_the_fix():
    features = unit(np.random.default_rng(3).standard_normal(6))
    with pytest.raises(TextEditError, match="^the neutral and target sentences give the same CLIP features, so there "
                                            "is no direction; change the target sentence to say what should change$"):
        global_direction(unit(np.ones((3, 6))), features, features + 1e-8, beta=0.1, layer_std=[np.ones(3)])


def test_fs3_files_of_the_wrong_kind_are_refused_with_what_was_found(tmp_path):
    with pytest.raises(DirectionFileError, match="^fs3 file not found: .*absent.npy$"):
        load_fs3(tmp_path / "absent.npy")
    cases = {
        "cube.npy": (np.ones((2, 3, 4)), r"expected a 2-d floating-point array \(channels, D\), found \(2, 3, 4\)"),
        "flat.npy": (np.ones(4), r"expected a 2-d .* found \(4,\)"),
        "int.npy": (np.ones((3, 4), dtype=np.int64), r"expected a 2-d .* found \(3, 4\)"),
    }
    for name, (array, message) in cases.items():
        np.save(tmp_path / name, array)
        with pytest.raises(DirectionFileError, match=f"{name}: {message}"):
            load_fs3(tmp_path / name)
    np.savez(tmp_path / "archive.npz", fs3=unit(np.ones((3, 4))))  # np.load gives an NpzFile, not an array
    with pytest.raises(DirectionFileError, match=r"archive.npz: expected a 2-d .* found <class '.*NpzFile'>"):
        load_fs3(tmp_path / "archive.npz")


def test_fs3_rows_must_be_finite_unit_vectors_within_one_percent(tmp_path):
    rows = unit(np.random.default_rng(4).standard_normal((5, 8)))
    np.save(tmp_path / "close.npy", rows * np.array([[1.0], [1.005], [0.995], [1.0], [1.0]]))
    loaded = load_fs3(tmp_path / "close.npy")
    assert loaded.dtype == np.float32 and loaded.shape == (5, 8)
    for name, change, message in (("long.npy", 1.5, r"norms 1.000 to 1.500"), ("short.npy", 0.98, r"norms 0.980 to")):
        scaled = rows.copy()
        scaled[2] *= change
        np.save(tmp_path / name, scaled)
        with pytest.raises(DirectionFileError, match=f"{name}: fs3 rows should be finite unit vectors \\({message}"):
            load_fs3(tmp_path / name)
    rows[1, 3] = np.nan
    np.save(tmp_path / "nan.npy", rows)
    with pytest.raises(DirectionFileError, match="fs3 rows should be finite unit vectors"):
        load_fs3(tmp_path / "nan.npy")


def test_std_uses_the_truncation_cutoff_it_is_given_and_returns_float32(tiny_generator):
    G = tiny_generator
    samples = 300
    z = torch.from_numpy(np.random.RandomState(5).randn(samples, G.z_dim))
    with torch.no_grad():
        ws = G.mapping(z, None, truncation_psi=0.7, truncation_cutoff=2)  # layers 2.. not truncated
        direct = [layer.affine(ws[:, index]).numpy().std(axis=0) for index, (_, layer) in
                  enumerate(G.synthesis.style_layers())]
    computed = style_std(G, samples=samples, truncation_cutoff=2)
    assert all(std.dtype == np.float32 for std in computed)
    for got, want in zip(computed, direct):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_std_cache_default_folder_nested_folders_chunks_and_an_unwritable_folder(tiny_generator, tmp_path):
    G = tiny_generator
    expected = style_std(G, samples=200)
    # default: $PTI_CACHE_DIR/converted (the fixture points PTI_CACHE_DIR at tmp_path / "pti-cache")
    got = cached_style_std(G, samples=200)
    assert all(np.array_equal(a, b) for a, b in zip(got, expected))
    names = [path.name for path in (tmp_path / "pti-cache" / "converted").iterdir()]
    assert len(names) == 1 and re.fullmatch(r"style-std-[0-9a-f]{32}\.safetensors", names[0])
    # the chunk size does not change the std, so it is not part of the name
    nested = tmp_path / "a" / "b"
    cached_style_std(G, cache_dir=nested, samples=200, chunk=64)
    cached_style_std(G, cache_dir=nested, samples=200, chunk=200)
    assert [path.name for path in nested.iterdir()] == names
    # a cache folder that cannot be made (a file is in the way): computed, not kept, no error
    (tmp_path / "file").write_text("not a folder")
    unwritable = cached_style_std(G, cache_dir=tmp_path / "file" / "cache", samples=200)
    assert all(np.array_equal(a, b) for a, b in zip(unwritable, expected))


def test_the_std_key_of_a_bfloat16_generator_is_computed_in_float32(tiny_generator):
    from editing_directions.global_directions import _std_key

    key = _std_key(tiny_generator.to(torch.bfloat16), {"samples": 10})  # numpy has no bfloat16
    assert re.fullmatch(r"[0-9a-f]{32}", key)
