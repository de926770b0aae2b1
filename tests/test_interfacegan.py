"""InterfaceGAN directions: validated loading, `w + factor * d` on all layers, the release's names and ranges."""
from __future__ import annotations

import re

import pytest
import torch

from editing_directions.errors import DirectionFileError, LatentShapeError
from editing_directions.interfacegan import INTERFACEGAN_DIRECTIONS, apply_direction, load_direction, \
    validate_direction


def save(tmp_path, name, value):
    """torch.save `value` to tmp_path/name and return the path."""
    path = tmp_path / name
    torch.save(value, path)
    return path


def test_release_names_files_and_ranges():
    by_name = {spec.name: spec for spec in INTERFACEGAN_DIRECTIONS}
    assert set(by_name) == {"age", "smile", "pose"}
    assert by_name["pose"].filename == "rotation.pt" and by_name["pose"].registry_key == "interfacegan-rotation"
    assert all((spec.min, spec.max, spec.default) == (-3.0, 3.0, 0.0) for spec in by_name.values())


@pytest.mark.parametrize("shape", [(1, 32), (32,)])
def test_load_direction_accepts_the_release_shapes(tmp_path, shape):
    direction = torch.randn(shape, dtype=torch.float64)
    loaded = load_direction(save(tmp_path, "d.pt", direction))
    assert loaded.shape == (32,) and loaded.dtype == torch.float32
    assert torch.equal(loaded, direction.reshape(-1).float())


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (torch.randn(2, 32), r"shape \[1, D\] or \[D\], found \(2, 32\)"),
        (torch.randn(1, 1, 32), r"found \(1, 1, 32\)"),
        (torch.zeros(0), r"found \(0,\)"),
        (torch.ones(1, 32, dtype=torch.int64), "floating-point"),
        (torch.full((1, 32), float("nan")), "NaN"),
        (torch.zeros(1, 32), "all zeros"),
        ({"direction": torch.randn(1, 32)}, "expected a tensor, found dict"),
    ],
)
def test_wrong_content_is_refused(tmp_path, value, message):
    with pytest.raises(DirectionFileError, match=message):
        load_direction(save(tmp_path, "bad.pt", value))


def test_corrupt_or_missing_file_is_refused(tmp_path):
    path = save(tmp_path, "age.pt", torch.randn(1, 32))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DirectionFileError, match="corrupt"):
        load_direction(path)
    with pytest.raises(DirectionFileError, match="not found"):
        load_direction(tmp_path / "absent.pt")


def test_apply_moves_every_layer_by_factor_times_direction():
    direction = torch.randn(32)
    w = torch.randn(2, 8, 32)
    edited = apply_direction(w, direction, -2.5)
    for layer in range(8):
        assert torch.allclose(edited[:, layer] - w[:, layer], -2.5 * direction.expand(2, 32), atol=1e-6)
    assert torch.equal(apply_direction(w, direction, 0.0), w)
    with pytest.raises(LatentShapeError, match=r"\(N, L, 32\), got \(2, 8, 16\)"):
        apply_direction(torch.randn(2, 8, 16), direction, 1.0)


def test_messages_name_the_file_and_what_it_should_be(tmp_path):
    with pytest.raises(DirectionFileError, match="^direction file not found: .*absent.pt$"):
        load_direction(tmp_path / "absent.pt")
    path = save(tmp_path, "dict.pt", {"direction": torch.randn(1, 32)})
    with pytest.raises(DirectionFileError, match=f"^{re.escape(str(path))}: expected a tensor, found dict$"):
        load_direction(path)
    # without a source, the message says "direction"
    with pytest.raises(DirectionFileError, match="^direction: the direction is all zeros$"):
        validate_direction(torch.zeros(32))


def test_a_small_direction_is_not_taken_for_zeros():
    small = torch.full((32,), 1e-3)  # |d| sums to 0.032: small, but not zero
    assert torch.equal(validate_direction(small), small)


def test_the_direction_follows_the_codes_dtype_and_device():
    direction = torch.randn(32)  # float32, on the CPU
    half = torch.randn(2, 8, 32).half()
    edited = apply_direction(half, direction, 1.5)
    assert edited.dtype == torch.float16
    assert torch.equal(edited, half + 1.5 * direction.half())
    on_meta = apply_direction(torch.empty(2, 8, 32, device="meta"), direction, 1.5)  # a device other than the CPU
    assert on_meta.device.type == "meta" and on_meta.shape == (2, 8, 32)
