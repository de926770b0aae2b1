"""Conversions between PIL images and generator-space tensors (NCHW, float32, range [-1, 1]), and a row of images."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image


def pil_to_tensor(image: Image.Image, size: int | None = None) -> torch.Tensor:
    """PIL image -> (1, 3, H, W) float32 tensor in [-1, 1]; resized (Lanczos) to `size` x `size` if given."""
    image = image.convert("RGB")
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.LANCZOS)
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()


def tensor_to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(N, 3, H, W) tensor in [-1, 1] (any device/dtype) -> list of N RGB PIL images (values clamped)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
    array = (images.detach().float().cpu().clamp(-1, 1) + 1.0) * 127.5
    array = array.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a, mode="RGB") for a in array]


def side_by_side(images: Sequence[Image.Image]) -> Image.Image:
    """RGB images of one size in a row, left to right."""
    width, height = images[0].size
    row = Image.new("RGB", (width * len(images), height))
    for index, image in enumerate(images):
        row.paste(image, (index * width, 0))
    return row
