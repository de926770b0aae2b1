"""StyleCLIP LevelsMapper: golden outputs of the released implementation, safe loading, refused bad files."""
from __future__ import annotations

import argparse
import json
import os
import pickle

import pytest
import torch
from conftest import FIXTURES

from editing_directions.errors import LatentShapeError, MapperFileError
from editing_directions.styleclip import LevelsMapper, apply_mapper, load_mapper, random_levels_mapper

MAPPER_DIR = FIXTURES / "styleclip_mapper"
OPTS_NO_FINE = {"no_coarse_mapper": False, "no_medium_mapper": False, "no_fine_mapper": True,
                "mapper_type": "LevelsMapper", "description": "fixture"}


def fixture_mapper_state() -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The fixture's mapper weights and input, drawn again from the recipe in its JSON file."""
    meta = json.loads((MAPPER_DIR / "levels_mapper_seed11_nofine1.json").read_text())
    generator = torch.Generator().manual_seed(meta["seed"])
    state = {}
    for key in sorted(meta["keys_sorted"]):
        shape = (512, 512) if key.endswith(".weight") else (512,)
        value = torch.randn(shape, generator=generator)
        state[key] = value / 0.01 if key.endswith(".weight") else value
    w = torch.randn(2, 18, 512, generator=generator) * 0.7 + 0.1
    return state, w


def released_checkpoint(mapper_state: dict[str, torch.Tensor], opts: object) -> dict:
    """A checkpoint in the released format: `mapper.*` keys, some `decoder.*` tensors, and `opts`."""
    state_dict = {f"mapper.{key}": value for key, value in mapper_state.items()}
    state_dict["decoder.style.1.weight"] = torch.randn(512, 512)
    state_dict["decoder.convs.0.conv.weight"] = torch.randn(1, 512, 512, 3, 3)[:, :8, :8]
    return {"state_dict": state_dict, "opts": opts}


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    """The golden input and output of the released LevelsMapper."""
    return torch.load(MAPPER_DIR / "levels_mapper_seed11_nofine1_reference.pt", weights_only=True)


def test_mapper_reproduces_released_golden_outputs(tmp_path, reference):
    state, w = fixture_mapper_state()
    assert torch.equal(w, reference["w"]), "the recipe should redraw the fixture's input exactly"
    path = tmp_path / "mapper.pt"
    torch.save(released_checkpoint(state, OPTS_NO_FINE), path)

    mapper = load_mapper(path)
    out = mapper(reference["w"])

    max_diff = (out - reference["mapper_out"]).abs().max().item()
    assert max_diff < 1e-4, f"max abs diff {max_diff}"
    assert torch.count_nonzero(out[:, 8:]) == 0  # the fine level is switched off
    assert not mapper.training and all(not p.requires_grad for p in mapper.parameters())
    assert all(p.dtype == torch.float32 for p in mapper.parameters())


def test_namespace_opts_load_through_the_safe_path_only(tmp_path, reference):
    state, _ = fixture_mapper_state()
    path = tmp_path / "old_mapper.pt"
    torch.save(released_checkpoint(state, argparse.Namespace(**OPTS_NO_FINE)), path)
    with pytest.raises(pickle.UnpicklingError):  # plain weights_only loading refuses the Namespace
        torch.load(path, weights_only=True)

    out = load_mapper(path)(reference["w"])

    assert (out - reference["mapper_out"]).abs().max().item() < 1e-4


class _RunsCode:
    """Pickles as a call to os.getpid: a file holding it must be refused, not executed."""

    def __reduce__(self):
        return (os.getpid, ())


def test_code_in_the_pickle_is_refused(tmp_path):
    state, _ = fixture_mapper_state()
    path = tmp_path / "evil.pt"
    torch.save(released_checkpoint(state, {"no_fine_mapper": _RunsCode()}), path)
    with pytest.raises(MapperFileError, match="refused by safe .weights_only. loading.*getpid"):
        load_mapper(path)


def test_missing_key_is_refused_with_its_name(tmp_path):
    state, _ = fixture_mapper_state()
    del state["medium_mapping.mapping.3.weight"]
    path = tmp_path / "missing.pt"
    torch.save(released_checkpoint(state, OPTS_NO_FINE), path)
    with pytest.raises(MapperFileError, match=r"missing \['mapper.medium_mapping.mapping.3.weight'\]"):
        load_mapper(path)


def test_level_switched_on_without_its_weights_is_refused(tmp_path):
    state, _ = fixture_mapper_state()
    path = tmp_path / "fine_missing.pt"
    torch.save(released_checkpoint(state, {**OPTS_NO_FINE, "no_fine_mapper": False}), path)
    with pytest.raises(MapperFileError, match="mapper.fine_mapping.mapping.1.bias"):
        load_mapper(path)


def test_wrong_shape_is_refused(tmp_path):
    state, _ = fixture_mapper_state()
    state["course_mapping.mapping.2.bias"] = torch.zeros(511)
    path = tmp_path / "shape.pt"
    torch.save(released_checkpoint(state, OPTS_NO_FINE), path)
    with pytest.raises(MapperFileError, match=r"course_mapping.mapping.2.bias has shape \(511,\), expected \(512,\)"):
        load_mapper(path)


def test_corrupt_and_foreign_files_are_refused(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(MapperFileError, match="garbage.pt"):
        load_mapper(garbage)

    state, _ = fixture_mapper_state()
    truncated = tmp_path / "truncated.pt"
    torch.save(released_checkpoint(state, OPTS_NO_FINE), truncated)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    with pytest.raises(MapperFileError, match="corrupt"):
        load_mapper(truncated)

    no_mapper = tmp_path / "encoder.pt"
    torch.save({"state_dict": {"encoder.x": torch.zeros(2)}, "opts": {}}, no_mapper)
    with pytest.raises(MapperFileError, match="no 'mapper.\\*' keys"):
        load_mapper(no_mapper)

    single = tmp_path / "single.pt"
    torch.save(released_checkpoint(state, {"mapper_type": "SingleMapper"}), single)
    with pytest.raises(MapperFileError, match="SingleMapper"):
        load_mapper(single)

    with pytest.raises(MapperFileError, match="not found"):
        load_mapper(tmp_path / "absent.pt")


def test_levels_follow_switches_and_keys_when_opts_is_absent(tmp_path):
    mapper = random_levels_mapper(32, seed=3, no_fine_mapper=False)
    w = torch.randn(2, 18, 32)
    state = {k: v for k, v in mapper.state_dict().items() if not k.startswith("medium_mapping.")}
    path = tmp_path / "no_opts.pt"
    torch.save({"state_dict": {f"mapper.{k}": v for k, v in state.items()}}, path)

    loaded = load_mapper(path)
    out = loaded(w)

    assert loaded.latent_dim == 32
    assert torch.count_nonzero(out[:, 4:8]) == 0  # the medium level has no weights: switched off
    assert torch.allclose(out[:, :4], mapper.course_mapping(w[:, :4]))
    assert torch.allclose(out[:, 8:], mapper.fine_mapping(w[:, 8:]))


def test_pixel_norm_works_across_the_layers_of_a_level():
    mapper = random_levels_mapper(32, seed=4)
    w = torch.randn(1, 18, 32)
    rescaled = w.clone()
    rescaled[:, :4, 5] *= 7.0  # one feature of the coarse layers, scaled on all four layers
    out, out_rescaled = mapper(w), mapper(rescaled)
    # normalising over dim 1 (the layers) removes a per-feature scale of a level: the coarse output is unchanged
    assert torch.allclose(out[:, :4], out_rescaled[:, :4], atol=1e-5)
    assert torch.equal(out[:, 4:], out_rescaled[:, 4:])


def test_apply_mapper_adds_alpha_times_the_output_and_checks_shapes():
    mapper = random_levels_mapper(32, seed=5)
    w = torch.randn(2, 8, 32, dtype=torch.float64)
    edited = apply_mapper(w, mapper, 0.1)
    assert edited.dtype == torch.float64
    assert torch.allclose(edited, w + 0.1 * mapper(w.float()).double(), atol=1e-6)
    assert torch.equal(apply_mapper(w, mapper, 0.0), w)
    with pytest.raises(LatentShapeError, match=r"\(N, L, 32\)"):
        LevelsMapper(latent_dim=32)(torch.randn(2, 8, 512))
