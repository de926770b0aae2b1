"""PIL <-> tensor conversions on known pixel values: channel order, value mapping, rounding, resizing."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pti.images import pil_to_tensor, tensor_to_pil


def test_pure_red_stays_red_both_ways():
    red = Image.new("RGB", (4, 3), (255, 0, 0))
    tensor = pil_to_tensor(red)
    assert tensor.shape == (1, 3, 3, 4) and tensor.dtype == torch.float32 and tensor.is_contiguous()
    assert torch.equal(tensor[0, 0], torch.ones(3, 4)) and torch.equal(tensor[0, 1:], -torch.ones(2, 3, 4))
    image = torch.full((1, 3, 2, 5), -1.0)
    image[:, 0] = 1.0
    (back,) = tensor_to_pil(image)
    assert back.mode == "RGB" and back.size == (5, 2)
    assert np.array_equal(np.asarray(back), np.tile(np.array([255, 0, 0], np.uint8), (2, 5, 1)))


def test_each_channel_lands_in_its_place():
    pixels = np.zeros((2, 3, 3), np.uint8)
    pixels[0, 0] = (10, 20, 30)
    pixels[1, 2] = (200, 100, 0)
    tensor = pil_to_tensor(Image.fromarray(pixels))
    assert tensor[0, :, 0, 0].tolist() == pytest.approx([v / 127.5 - 1 for v in (10, 20, 30)])
    assert tensor[0, :, 1, 2].tolist() == pytest.approx([v / 127.5 - 1 for v in (200, 100, 0)])
    assert np.array_equal(np.asarray(tensor_to_pil(tensor)[0]), pixels)


def test_a_ramp_maps_linearly_and_rounds_to_the_nearest_level():
    levels = np.arange(256, dtype=np.uint8)
    ramp = np.stack([levels, levels[::-1], np.full(256, 7, np.uint8)], axis=-1)[None]  # 1 x 256 px, RGB
    tensor = pil_to_tensor(Image.fromarray(ramp))
    expected = torch.from_numpy(ramp.astype(np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
    assert torch.allclose(tensor, expected, atol=1e-6)
    assert tensor.min() == -1.0 and tensor.max() == 1.0
    assert np.array_equal(np.asarray(tensor_to_pil(tensor)[0]), ramp)  # lossless round trip
    # Values between levels round to the nearest one; out-of-range values are clamped.
    values = torch.tensor([-2.0, -1.0, -1 + 0.4 / 127.5, -1 + 0.6 / 127.5, 0.0, 1.0, 3.0])
    image = values.view(1, 1, 1, -1).repeat(1, 3, 1, 1)
    assert np.asarray(tensor_to_pil(image)[0])[0, :, 0].tolist() == [0, 0, 0, 1, 128, 255, 255]


def test_batches_devices_and_dtypes():
    images = torch.rand(3, 3, 4, 4) * 2 - 1
    out = tensor_to_pil(images.half().requires_grad_(False))
    assert len(out) == 3 and all(image.size == (4, 4) for image in out)
    second = pil_to_tensor(out[1])
    assert (second - images[1:2]).abs().max() <= 1 / 127.5 + 2e-3  # half precision and one rounding step
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        tensor_to_pil(torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        tensor_to_pil(torch.zeros(1, 4, 4, 4))


def test_grey_and_rgba_become_rgb_and_size_resizes_with_lanczos():
    grey = Image.new("L", (6, 6), 51)
    assert torch.allclose(pil_to_tensor(grey), torch.full((1, 3, 6, 6), 51 / 127.5 - 1))
    rgba = Image.new("RGBA", (6, 6), (0, 0, 255, 10))
    assert pil_to_tensor(rgba)[0, :, 0, 0].tolist() == [-1.0, -1.0, 1.0]
    pattern = Image.fromarray((np.arange(64 * 64 * 3) % 251).astype(np.uint8).reshape(64, 64, 3))
    resized = pil_to_tensor(pattern, size=16)
    expected = np.asarray(pattern.resize((16, 16), Image.LANCZOS), dtype=np.float32) / 127.5 - 1
    assert resized.shape == (1, 3, 16, 16)
    assert torch.allclose(resized[0].permute(1, 2, 0), torch.from_numpy(expected))
    same = pil_to_tensor(pattern, size=64)
    assert torch.equal(same, pil_to_tensor(pattern))
