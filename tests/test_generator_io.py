"""Generator files: safetensors round trip, strict checks with clear errors, the shipped tiny asset."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from conftest import FACES_DIR, TINY_DIR
from pti.generator_io import (
    FORMAT,
    GeneratorFileError,
    load_generator_file,
    read_metadata,
    save_generator,
)

ASSET = Path(__file__).parent.parent / "pti" / "assets" / "stylegan2_tiny.safetensors"


def _reference_state_dict() -> dict[str, torch.Tensor]:
    return torch.load(TINY_DIR / "G_ema_state_dict.pt", weights_only=True)


def _assert_same_tensors(G: torch.nn.Module, reference: dict[str, torch.Tensor]) -> None:
    state = G.state_dict()
    assert list(state) == list(reference)
    for name, tensor in reference.items():
        assert state[name].dtype == torch.float32, name
        assert torch.equal(state[name], tensor), name


def test_round_trip_keeps_every_tensor_metadata_and_output(tmp_path, tiny_generator, tiny_init_kwargs):
    path = save_generator(tiny_generator, tmp_path / "out" / "G.safetensors", metadata={"note": "round trip"})
    assert path == tmp_path / "out" / "G.safetensors"
    assert [p.name for p in path.parent.iterdir()] == ["G.safetensors"]  # no temporary file left behind

    metadata = read_metadata(path)
    assert metadata["format"] == FORMAT
    assert json.loads(metadata["init_kwargs"]) == tiny_init_kwargs
    assert metadata["note"] == "round trip"

    loaded = load_generator_file(path)
    _assert_same_tensors(loaded, _reference_state_dict())
    assert not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())
    assert loaded.init_kwargs == tiny_init_kwargs
    z = torch.randn(2, tiny_init_kwargs["z_dim"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = tiny_generator(z, None, noise_mode="const", force_fp32=True)
        assert torch.equal(loaded(z, None, noise_mode="const", force_fp32=True), expected)


def test_saving_over_an_existing_file_replaces_it(tmp_path, tiny_generator):
    path = tmp_path / "G.safetensors"
    path.write_bytes(b"old contents")
    save_generator(tiny_generator, path)
    _assert_same_tensors(load_generator_file(path), _reference_state_dict())


@pytest.mark.parametrize("metadata", [{"format": "other"}, {"init_kwargs": "{}"}, {"count": 3}])
def test_reserved_or_non_text_metadata_is_refused(tmp_path, tiny_generator, metadata):
    with pytest.raises(ValueError):
        save_generator(tiny_generator, tmp_path / "G.safetensors", metadata=metadata)
    assert not (tmp_path / "G.safetensors").exists()


def test_plain_reference_state_dict_loads_with_explicit_init_kwargs(tmp_path, tiny_init_kwargs):
    path = tmp_path / "plain.safetensors"
    save_file(_reference_state_dict(), str(path))
    with pytest.raises(GeneratorFileError, match="init_kwargs"):
        load_generator_file(path)
    _assert_same_tensors(load_generator_file(path, init_kwargs=tiny_init_kwargs), _reference_state_dict())


def _broken(state: dict[str, torch.Tensor], change: str) -> dict[str, torch.Tensor]:
    state = dict(state)
    if change == "missing":
        del state["synthesis.b8.conv0.noise_const"]
    elif change == "unexpected":
        state["synthesis.b64.const"] = torch.zeros(1)
    elif change == "shape":
        state["mapping.fc0.weight"] = torch.zeros(16, 32)
    return state


@pytest.mark.parametrize(("change", "named"), [
    ("missing", r"1 missing tensor\(s\): synthesis\.b8\.conv0\.noise_const"),
    ("unexpected", r"1 unexpected tensor\(s\): synthesis\.b64\.const"),
    ("shape", r"mapping\.fc0\.weight \(16, 32\) \(the generator needs \(32, 32\)\)"),
])
def test_mismatched_tensors_are_named(tmp_path, tiny_init_kwargs, change, named):
    path = tmp_path / "broken.safetensors"
    save_file(_broken(_reference_state_dict(), change), str(path),
              metadata={"format": FORMAT, "init_kwargs": json.dumps(tiny_init_kwargs)})
    with pytest.raises(GeneratorFileError, match=named):
        load_generator_file(path)


def test_wrong_architecture_in_header_is_a_clear_error(tmp_path, tiny_init_kwargs):
    path = tmp_path / "G.safetensors"
    wider = dict(tiny_init_kwargs, w_dim=64)
    save_file(_reference_state_dict(), str(path), metadata={"format": FORMAT, "init_kwargs": json.dumps(wider)})
    with pytest.raises(GeneratorFileError, match="shape mismatch"):
        load_generator_file(path)
    save_file(_reference_state_dict(), str(path), metadata={"format": FORMAT, "init_kwargs": "{not json"})
    with pytest.raises(GeneratorFileError, match="not valid JSON"):
        load_generator_file(path)


@pytest.mark.parametrize("kind", ["png", "torch-zip", "truncated", "missing"])
def test_not_a_safetensors_file_is_a_clear_error(tmp_path, kind):
    if kind == "png":
        path = FACES_DIR / "astronaut.png"
    elif kind == "torch-zip":
        path = TINY_DIR / "G_ema_state_dict.pt"
    elif kind == "truncated":
        data = ASSET.read_bytes()
        path = tmp_path / "cut.safetensors"
        path.write_bytes(data[: len(data) // 2])
    else:
        path = tmp_path / "nothing.safetensors"
    with pytest.raises(GeneratorFileError):
        load_generator_file(path)


def test_shipped_tiny_asset_equals_the_fixture(tiny_init_kwargs):
    assert ASSET.stat().st_size < 400_000
    metadata = read_metadata(ASSET)
    assert metadata["format"] == FORMAT
    assert json.loads(metadata["init_kwargs"]) == tiny_init_kwargs
    _assert_same_tensors(load_generator_file(ASSET), _reference_state_dict())


@pytest.mark.gpu
def test_load_onto_cuda():
    G = load_generator_file(ASSET, device="cuda")
    assert all(t.is_cuda and t.dtype == torch.float32 for t in G.state_dict().values())
