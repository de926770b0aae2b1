"""StyleCLIP LevelsMapper: golden outputs of the released implementation, safe loading, refused bad files."""
from __future__ import annotations

import argparse
import json
import os
import pickle
import re

import pytest
import torch
from conftest import FIXTURES

from editing_directions.errors import LatentShapeError, MapperFileError
from editing_directions.styleclip import LR_MUL, EqualLinear, LevelsMapper, apply_mapper, load_mapper, \
    random_levels_mapper

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


def test_a_level_of_zeros_maps_to_finite_values():
    mapper = random_levels_mapper(32, seed=6)
    w = torch.randn(1, 18, 32)
    w[:, 4:8] = 0.0  # the whole medium level is zero: PixelNorm's epsilon keeps it finite
    out = mapper(w)
    assert torch.isfinite(out).all()
    # PixelNorm of zeros is zeros: the medium output is the mapper of a zero input, the same for any zero slice
    assert torch.allclose(out[:, 4:8], mapper.medium_mapping(torch.zeros(1, 4, 32)))


def test_equal_linear_starts_with_unit_variance_effective_weights():
    torch.manual_seed(0)
    layer = EqualLinear(256, 128)
    effective = layer.weight * layer.scale
    # rosinality's init: stored weight randn / lr_mul, scaled by lr_mul / sqrt(fan_in) at run time
    assert effective.std().item() * 256 ** 0.5 == pytest.approx(1.0, rel=0.05)
    assert layer.weight.std().item() == pytest.approx(1 / LR_MUL, rel=0.05)
    assert torch.count_nonzero(layer.bias) == 0


def test_levels_mapper_and_the_demo_mapper_default_to_every_level_of_ffhq_width():
    mapper = LevelsMapper()
    assert mapper.latent_dim == 512
    assert mapper.active_levels == ("course_mapping", "medium_mapping", "fine_mapping")
    assert random_levels_mapper(8, seed=0).active_levels == ("course_mapping", "medium_mapping", "fine_mapping")
    assert random_levels_mapper(8, seed=0, no_fine_mapper=True).active_levels == ("course_mapping", "medium_mapping")


def test_demo_mapper_weights_follow_the_recipe_and_are_frozen():
    mapper = random_levels_mapper(8, seed=12)
    generator = torch.Generator().manual_seed(12)
    state = mapper.state_dict()
    assert len(state) == 3 * 4 * 2
    for key in sorted(state):  # drawn in sorted key order; the weights divided by lr_mul (0.01)
        drawn = torch.randn(state[key].shape, generator=generator)
        assert torch.allclose(state[key], drawn * 100 if key.endswith(".weight") else drawn, rtol=1e-6, atol=0), key
    assert not mapper.training and not any(p.requires_grad for p in mapper.parameters())
    assert not torch.equal(random_levels_mapper(8, seed=13).state_dict()["course_mapping.mapping.1.weight"],
                           state["course_mapping.mapping.1.weight"])


def test_apply_mapper_without_parameters_and_with_a_half_code():
    off = LevelsMapper(latent_dim=8, no_coarse_mapper=True, no_medium_mapper=True, no_fine_mapper=True)
    assert list(off.parameters()) == []
    w = torch.randn(2, 18, 8)
    assert torch.equal(apply_mapper(w, off, 0.2), w)  # every level off: no offset
    mapper = random_levels_mapper(8, seed=7)
    half = torch.randn(2, 18, 8).half()
    edited = apply_mapper(half, mapper, 0.1)
    assert edited.dtype == torch.float16
    expected = half.double() + 0.1 * mapper(half.float()).double()
    assert (edited.double() - expected).abs().max().item() < 1e-2 * expected.abs().max().item()


def small_state() -> dict[str, torch.Tensor]:
    """Mapper weights of width 8 with the fine level switched off, as in OPTS_NO_FINE (small files, fast tests)."""
    return random_levels_mapper(8, seed=1, no_fine_mapper=True).state_dict()


def save_checkpoint(path, state, opts=OPTS_NO_FINE) -> None:
    torch.save(released_checkpoint(state, opts), path)


def test_opts_without_mapper_type_or_switches_default_to_levels_mapper_with_levels_on(tmp_path):
    state = small_state()
    w = torch.randn(2, 18, 8)
    path = tmp_path / "plain_opts.pt"
    save_checkpoint(path, state, {"no_fine_mapper": True})  # no mapper_type, no coarse / medium switches
    mapper = load_mapper(path)
    assert mapper.active_levels == ("course_mapping", "medium_mapping")
    assert torch.count_nonzero(mapper(w)[:, :8]) > 0


def test_namespace_opts_are_read_not_ignored(tmp_path):
    state = small_state()
    path = tmp_path / "single.pt"
    save_checkpoint(path, state, argparse.Namespace(**{**OPTS_NO_FINE, "mapper_type": "SingleMapper"}))
    with pytest.raises(MapperFileError, match="mapper_type 'SingleMapper' is not supported"):
        load_mapper(path)


def test_a_namespace_file_with_code_is_still_refused_by_the_second_read(tmp_path):
    state = small_state()
    path = tmp_path / "namespace_and_code.pt"
    # The Namespace is pickled first, so the first (plain) read is refused for it and the second read runs.
    state_dict = released_checkpoint(state, None)["state_dict"]
    torch.save({"opts": argparse.Namespace(**OPTS_NO_FINE), "state_dict": state_dict, "extra": _RunsCode()}, path)
    with pytest.raises(pickle.UnpicklingError, match="argparse.Namespace"):
        torch.load(path, weights_only=True)
    with pytest.raises(MapperFileError, match=r"refused by safe \(weights_only\) loading or not a mapper checkpoint.*"
                                              r"getpid"):
        load_mapper(path)


def test_bad_checkpoint_layouts_are_refused_with_the_reason(tmp_path):
    state = small_state()
    with pytest.raises(MapperFileError, match="mapper checkpoint not found"):
        load_mapper(tmp_path / "absent.pt")
    cases = {
        "list.pt": ([state], "list.pt: expected a dict with a 'state_dict' entry"),
        "opts_list.pt": (released_checkpoint(state, ["no_fine_mapper"]),
                         "opts_list.pt: 'opts' should be a dict or argparse.Namespace, got list"),
        "no_first.pt": ({"state_dict": {"mapper.course_mapping.mapping.2.bias": torch.zeros(4)}},
                        r"no_first.pt: no '<level>.mapping.1.weight' matrix"),
        "flat_first.pt": ({"state_dict": {"mapper.course_mapping.mapping.1.weight": torch.zeros(4)}},
                          r"flat_first.pt: no '<level>.mapping.1.weight' matrix"),
    }
    for name, (content, message) in cases.items():
        torch.save(content, tmp_path / name)
        with pytest.raises(MapperFileError, match=message):
            load_mapper(tmp_path / name)


def test_non_float_and_non_finite_tensors_are_refused_by_name(tmp_path):
    state = small_state()
    for name, value, message in (("int", torch.zeros(8, dtype=torch.int64), "is not a floating-point tensor"),
                                 ("nan", torch.full((8,), float("nan")), "contains NaN or infinite values")):
        path = tmp_path / f"{name}.pt"
        save_checkpoint(path, {**state, "medium_mapping.mapping.4.bias": value})
        with pytest.raises(MapperFileError, match=f"{name}.pt: mapper.medium_mapping.mapping.4.bias {message}"):
            load_mapper(path)


def layer_keys(level: str, count: int) -> list[str]:
    keys = [f"{level}.mapping.{i}.{kind}" for i in range(1, 5) for kind in ("bias", "weight")]
    return sorted(keys)[:count]


@pytest.mark.parametrize("count", [6, 7])
def test_key_lists_in_messages_stop_after_six(tmp_path, count):
    state = small_state()
    dropped = layer_keys("medium_mapping", count)
    path = tmp_path / "missing.pt"
    save_checkpoint(path, {k: v for k, v in state.items() if k not in dropped})
    shown = [f"mapper.{key}" for key in dropped[:6]]
    message = f"missing {shown}{' ...' if count > 6 else ''}, unexpected []"
    with pytest.raises(MapperFileError, match=re.escape(message)):
        load_mapper(path)

    extra = {key.replace("medium_mapping", "fine_mapping"): state[key] for key in layer_keys("medium_mapping", count)}
    path = tmp_path / "unexpected.pt"
    save_checkpoint(path, {**state, **extra})
    shown = [f"mapper.{key}" for key in sorted(extra)[:6]]
    with pytest.raises(MapperFileError, match=re.escape(f"missing [], unexpected {shown}{' ...' if count > 6 else ''}")
                       + "$"):
        load_mapper(path)
