"""e4e encoder: released key names and shapes, the released code's output on seeded weights, safe checkpoint loading."""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import types

import numpy as np
import pytest
import torch
from conftest import FACES_DIR, FIXTURES
from PIL import Image

from pti.e4e import (
    E4E,
    E4ECheckpointError,
    E4EInputError,
    e4e_input_tensor,
    load_e4e,
    read_e4e_checkpoint,
)
from pti.e4e_network import Encoder4Editing, num_styles_for_resolution

E4E_DIR = FIXTURES / "e4e"
RELEASED_KEYS = json.loads((E4E_DIR / "e4e_encoder_keys.json").read_text())["encoder_state_dict_keys"]
SEED_RECIPE = json.loads((E4E_DIR / "e4e_encoder_seed5.json").read_text())
LATENT_AVG_SEED = 123
# Right top-level layout, one encoder tensor: enough to reach the checks on `opts`.
MINIMAL_E4E_LAYOUT = {"state_dict": {"encoder.latlayer1.bias": torch.zeros(512)}, "latent_avg": torch.zeros(18, 512)}


def meta_encoder(num_styles: int = 18) -> Encoder4Editing:
    """An encoder with no memory behind its weights: enough for names, shapes and shape inference."""
    with torch.device("meta"):
        return Encoder4Editing(num_styles)


def seeded_weights_and_input(seed: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The fixture's recipe (e4e_encoder_seed5.json): weights drawn in sorted key order, then the input x."""
    generator = torch.Generator().manual_seed(seed)
    weights = {}
    for key in sorted(RELEASED_KEYS):
        shape, dtype = RELEASED_KEYS[key]
        if dtype != "torch.float32":
            weights[key] = torch.zeros(shape, dtype=getattr(torch, dtype.removeprefix("torch.")))
        elif key.endswith(".running_var"):
            weights[key] = torch.rand(shape, generator=generator) + 0.5
        elif key.endswith(".running_mean"):
            weights[key] = torch.randn(shape, generator=generator) * 0.1
        elif len(shape) > 1:
            weights[key] = torch.randn(shape, generator=generator) / math.sqrt(math.prod(shape[1:]))
        else:
            weights[key] = torch.randn(shape, generator=generator) * 0.1 + (1.0 if key.endswith(".weight") else 0.0)
    x = torch.randn(1, 3, 256, 256, generator=generator).clamp(-1, 1)
    return weights, x


def zero_weights() -> dict[str, torch.Tensor]:
    """Every released key with its shape and dtype, as zero-stride views of one element (tiny on disk)."""
    return {
        key: torch.zeros((), dtype=getattr(torch, dtype.removeprefix("torch."))).expand(shape)
        for key, (shape, dtype) in RELEASED_KEYS.items()
    }


def write_released_checkpoint(path, encoder_weights, *, latent_avg=None, opts=None, zip_format=True) -> None:
    """A checkpoint in the layout of e4e_ffhq_encode.pt: encoder.* and decoder.* weights, opts, latent_avg."""
    state_dict = {f"encoder.{key}": value for key, value in encoder_weights.items()}
    # A few generator tensors with released names (shrunk): the loader must ignore them.
    state_dict["decoder.style.1.weight"] = torch.randn(8, 8)
    state_dict["decoder.conv1.conv.weight"] = torch.randn(1, 8, 8, 3, 3)
    state_dict["decoder.input.input"] = torch.randn(1, 8, 4, 4)
    torch.save(
        {
            "state_dict": state_dict,
            "opts": {"encoder_type": "Encoder4Editing", "stylegan_size": 1024, "lr": 0.0001} if opts is None else opts,
            "latent_avg": torch.zeros(18, 512) if latent_avg is None else latent_avg,
        },
        path,
        _use_new_zipfile_serialization=zip_format,
    )


@pytest.fixture(scope="module")
def reference():
    """The released code's input x and codes for the seeded weights."""
    return torch.load(E4E_DIR / "e4e_encoder_seed5_reference.pt", weights_only=True)


@pytest.fixture(scope="module")
def seeded_checkpoint(tmp_path_factory):
    """(path, x drawn by the recipe, latent_avg) of the seeded weights saved in the released layout (~1.1 GB)."""
    weights, x = seeded_weights_and_input(SEED_RECIPE["seed"])
    latent_avg = torch.randn(18, 512, generator=torch.Generator().manual_seed(LATENT_AVG_SEED))
    path = tmp_path_factory.mktemp("e4e") / "e4e_seed5.pt"
    write_released_checkpoint(path, weights, latent_avg=latent_avg)
    del weights
    yield path, x, latent_avg
    path.unlink()


@pytest.fixture(scope="module")
def seeded_e4e(seeded_checkpoint) -> E4E:
    """The seeded checkpoint loaded through the public loader."""
    return load_e4e(seeded_checkpoint[0], device="cpu")


def test_encoder_has_every_released_key_shape_and_dtype_in_order():
    state_dict = meta_encoder().state_dict()
    assert len(RELEASED_KEYS) == 621
    assert list(state_dict) == list(RELEASED_KEYS)
    for key, (shape, dtype) in RELEASED_KEYS.items():
        assert list(state_dict[key].shape) == shape, key
        assert str(state_dict[key].dtype) == dtype, key


@pytest.mark.parametrize(("resolution", "num_styles"), [(1024, 18), (512, 16)])
def test_style_heads_and_output_shape_follow_generator_resolution(resolution, num_styles):
    assert num_styles_for_resolution(resolution) == num_styles
    encoder = meta_encoder(num_styles)
    # Coarse heads read 16x16 maps (4 stride-2 convs), middle 32x32 (5), fine 64x64 (6).
    conv_counts = [len(head.convs) // 2 for head in encoder.styles]
    assert conv_counts == [4] * 3 + [5] * 4 + [6] * (num_styles - 7)
    assert encoder(torch.empty(2, 3, 256, 256, device="meta")).shape == (2, num_styles, 512)


def release_transform(image: Image.Image) -> torch.Tensor:
    """The release's transform, written out: bilinear resize to 256, ToTensor (/255), Normalize(0.5, 0.5)."""
    resized = np.asarray(image.convert("RGB").resize((256, 256), Image.BILINEAR), dtype=np.float32) / 255.0
    return (torch.from_numpy(resized).permute(2, 0, 1)[None] - 0.5) / 0.5


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    """A real 512x512 photo (the encoder sees it resized to 256)."""
    return Image.open(FACES_DIR / "astronaut.png")


@pytest.fixture(scope="module")
def seeded_codes(seeded_e4e, reference, astronaut) -> torch.Tensor:
    """encoder() on a batch of two: the reference input x and the astronaut photo, (2, 18, 512)."""
    with torch.no_grad():
        return seeded_e4e.encoder(torch.cat([reference["x"], release_transform(astronaut)]))


@pytest.mark.slow
def test_seeded_release_checkpoint_reproduces_released_codes(seeded_checkpoint, seeded_e4e, reference, seeded_codes):
    _, x, latent_avg = seeded_checkpoint
    assert torch.equal(x, reference["x"])  # the recipe is rebuilt exactly
    assert not seeded_e4e.encoder.training
    assert torch.equal(seeded_e4e.latent_avg, latent_avg)
    assert seeded_codes.shape == (2, 18, 512)
    torch.testing.assert_close(seeded_codes[:1], reference["codes"], rtol=0, atol=1e-4)


@pytest.mark.slow
def test_invert_is_codes_plus_latent_avg_on_the_release_transform(seeded_e4e, seeded_codes, astronaut):
    torch.testing.assert_close(e4e_input_tensor(astronaut), release_transform(astronaut), rtol=0, atol=1e-6)
    pivot = seeded_e4e.invert(astronaut)
    assert pivot.shape == (1, 18, 512) and pivot.dtype == torch.float32 and not pivot.requires_grad
    torch.testing.assert_close(pivot[0], seeded_codes[1] + seeded_e4e.latent_avg, rtol=0, atol=1e-5)


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_argparse_namespace_opts_are_read_without_unsafe_loading(tmp_path, zip_format):
    path = tmp_path / "namespace_opts.pt"
    latent_avg = torch.randn(18, 512)
    opts = argparse.Namespace(encoder_type="Encoder4Editing", stylegan_size=1024, start_from_latent_avg=True)
    write_released_checkpoint(path, zero_weights(), latent_avg=latent_avg, opts=opts, zip_format=zip_format)
    checkpoint = read_e4e_checkpoint(path)
    assert checkpoint.opts == {"encoder_type": "Encoder4Editing", "stylegan_size": 1024, "start_from_latent_avg": True}
    assert set(checkpoint.encoder_state_dict) == set(RELEASED_KEYS)  # prefix stripped, decoder.* dropped
    assert torch.equal(checkpoint.latent_avg, latent_avg)


class _RunsCodeWhenUnpickled:
    """Pickles as a call to os.mkdir: a stand-in for a malicious checkpoint."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_checkpoint_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "malicious.pt"
    torch.save({"state_dict": {}, "opts": _RunsCodeWhenUnpickled(marker), "latent_avg": torch.zeros(18, 512)}, path)
    with pytest.raises(E4ECheckpointError, match="not a readable torch checkpoint"):
        read_e4e_checkpoint(path)
    assert not marker.exists()


def edited_weights(drop=(), add=(), reshape=()):
    """Zero weights with keys dropped, extra keys added and some keys given a wrong shape."""
    weights = zero_weights()
    for key in drop:
        del weights[key]
    for key in add:
        weights[key] = torch.zeros(512)
    for key, shape in reshape:
        weights[key] = torch.zeros(()).expand(shape)
    return weights


@pytest.mark.parametrize(
    ("edits", "message"),
    [
        ({"drop": ["styles.17.linear.bias"]}, r"missing: styles\.17\.linear\.bias"),
        ({"add": ["styles.18.linear.bias"]}, r"unexpected: styles\.18\.linear\.bias"),
        (
            {"reshape": [("latlayer1.weight", (512, 128, 1, 1))]},
            r"wrong shape: latlayer1\.weight \(512, 128, 1, 1\) \(expected \(512, 256, 1, 1\)\)",
        ),
    ],
)
def test_encoder_key_or_shape_mismatch_is_a_clear_error(tmp_path, edits, message):
    path = tmp_path / "broken.pt"
    write_released_checkpoint(path, edited_weights(**edits))
    with pytest.raises(E4ECheckpointError, match=message) as raised:
        load_e4e(path)
    assert str(path) in str(raised.value)


def test_many_missing_keys_are_summarised(tmp_path):
    path = tmp_path / "no_styles.pt"
    style_keys = [key for key in RELEASED_KEYS if key.startswith("styles.")]
    write_released_checkpoint(path, edited_weights(drop=style_keys))
    expected = rf"missing: styles\.0\.convs\.0\.weight, .* and {len(style_keys) - 5} more"
    with pytest.raises(E4ECheckpointError, match=expected):
        load_e4e(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"this is not a checkpoint\n", "not a readable torch checkpoint"),
        (torch.zeros(3), "expected a dict with 'state_dict'"),
        ({"state_dict": {"decoder.style.1.weight": torch.zeros(1)}}, "has no 'encoder.*' keys"),
        ({"state_dict": {"encoder.latlayer1.bias": torch.zeros(512)}}, "expected 'latent_avg' of shape"),
        (
            {**MINIMAL_E4E_LAYOUT, "opts": {"encoder_type": "GradualStyleEncoder"}},
            "only 'Encoder4Editing'",
        ),
        (
            {**MINIMAL_E4E_LAYOUT, "opts": {"stylegan_size": 512}},
            "stylegan_size 512 does not match",
        ),
    ],
)
def test_files_that_are_not_e4e_checkpoints_are_refused(tmp_path, content, message):
    path = tmp_path / "not_e4e.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(E4ECheckpointError, match=message):
        load_e4e(path)


def test_default_path_comes_from_the_weights_registry(tmp_path, monkeypatch):
    registry_file = tmp_path / "registry_e4e.pt"
    write_released_checkpoint(registry_file, edited_weights(drop=["latlayer2.bias"]))
    asked = []

    def resolve(key, **kwargs):
        asked.append(key)
        return registry_file

    monkeypatch.setitem(sys.modules, "pti.weights", types.SimpleNamespace(resolve=resolve))
    with pytest.raises(E4ECheckpointError, match=r"registry_e4e\.pt: .*missing: latlayer2\.bias"):
        load_e4e()
    assert asked == ["e4e-ffhq-encode"]


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="e4e checkpoint not found"):
        load_e4e(tmp_path / "absent.pt")


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (torch.zeros(1, 3, 512, 512), r"shape \(N, 3, 256, 256\)"),
        (torch.zeros(3, 256, 256), r"shape \(N, 3, 256, 256\)"),
        (torch.zeros(1, 3, 256, 256, dtype=torch.uint8), "floating-point"),
        (torch.full((1, 3, 256, 256), 255.0), r"values in \[-1, 1\]"),
    ],
)
def test_bad_encoder_input_is_a_clear_error(images, message):
    e4e = E4E(encoder=meta_encoder(), latent_avg=torch.zeros(18, 512))
    with pytest.raises(E4EInputError, match=message):
        e4e.invert_tensor(images)


def test_invert_needs_a_pil_image():
    e4e = E4E(encoder=meta_encoder(), latent_avg=torch.zeros(18, 512))
    with pytest.raises(E4EInputError, match="expected a PIL image"):
        e4e.invert(np.zeros((256, 256, 3), dtype=np.uint8))
