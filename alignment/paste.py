"""Paste-back: warp an edited aligned face into the original photo through the inverse quad transform, feathered."""
from __future__ import annotations

import math

import numpy as np
from PIL import Image

from .align import AlignedFace
from .errors import AlignmentError
from .ffhq_crop import quad_size
from .image_io import ImageSource, load_image

# The face mask, in fractions of the aligned image: an ellipse around the face (FFHQ puts the eyes at height ~0.47,
# the jaw between x 0.24 and 0.77 and the chin near 0.9), opaque inside MASK_OPAQUE_RADIUS of its normalised
# radius, fading smoothly to 0 at its edge, so that it stays inside the aligned square and leaves no seam.
MASK_CENTRE = (0.5, 0.54)
MASK_RADII = (0.46, 0.46)
MASK_OPAQUE_RADIUS = 0.75


def paste_back(original: ImageSource, aligned_face: AlignedFace, edited: ImageSource) -> Image.Image:
    """The original photo with the edited aligned face (any square size) warped back in under a feathered mask."""
    original = load_image(original)
    if original.size != aligned_face.original_size:
        raise AlignmentError(
            f"the original image is {original.size[0]}x{original.size[1]} but the face was aligned from a "
            f"{aligned_face.original_size[0]}x{aligned_face.original_size[1]} image"
        )
    edited = load_image(edited)
    if edited.size[0] != edited.size[1]:
        raise AlignmentError(f"the edited face must be square, got {edited.size[0]}x{edited.size[1]}")
    region = _quad_region(aligned_face.quad, original.size)
    if region is None:
        return original.copy()
    left, top, right, bottom = region
    mask = _mask_in_region(aligned_face.quad, region)

    # Resize the edited face to the quad's size in the original photo, then warp it with the inverse transform.
    side = max(1, round(quad_size(aligned_face.quad)))
    if edited.size != (side, side):
        edited = edited.resize((side, side), Image.Resampling.LANCZOS)
    inverse = side * _inverse_axes(aligned_face.quad)
    offset = inverse @ (np.array([left, top], dtype=np.float64) - aligned_face.quad[0] - 0.5)
    warped = edited.transform(
        (right - left, bottom - top),
        Image.Transform.AFFINE,
        (inverse[0, 0], inverse[0, 1], offset[0], inverse[1, 0], inverse[1, 1], offset[1]),
        Image.Resampling.BICUBIC,
    )

    base = np.asarray(original.crop(region), dtype=np.float32)
    blended = base + (np.asarray(warped, dtype=np.float32) - base) * mask[:, :, None]
    result = original.copy()
    result.paste(Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8)), (left, top))
    return result


def face_mask(aligned_face: AlignedFace) -> np.ndarray:
    """The paste-back mask over the original photo: (height, width) float32, 1 on the face, 0 past its feather."""
    width, height = aligned_face.original_size
    mask = np.zeros((height, width), dtype=np.float32)
    region = _quad_region(aligned_face.quad, (width, height))
    if region is not None:
        left, top, right, bottom = region
        mask[top:bottom, left:right] = _mask_in_region(aligned_face.quad, region)
    return mask


def _inverse_axes(quad: np.ndarray) -> np.ndarray:
    """The 2x2 matrix that maps an offset from quad[0] in the original to fractions of the aligned image."""
    return np.linalg.inv(np.stack([quad[3] - quad[0], quad[1] - quad[0]], axis=1))


def _quad_region(quad: np.ndarray, image_size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """The pixel box (left, top, right, bottom) of the image covered by the quad, or None if it covers nothing."""
    corners = np.asarray(quad) + 0.5
    left = max(math.floor(corners[:, 0].min()), 0)
    top = max(math.floor(corners[:, 1].min()), 0)
    right = min(math.ceil(corners[:, 0].max()), image_size[0])
    bottom = min(math.ceil(corners[:, 1].max()), image_size[1])
    if right <= left or bottom <= top:
        return None
    return left, top, right, bottom


def _mask_in_region(quad: np.ndarray, region: tuple[int, int, int, int]) -> np.ndarray:
    """The feathered elliptical face mask at the pixel centres of `region` (float32, values in [0, 1])."""
    left, top, right, bottom = region
    inverse = _inverse_axes(np.asarray(quad, dtype=np.float64))
    x = np.arange(left, right, dtype=np.float64)[None, :] - quad[0][0]
    y = np.arange(top, bottom, dtype=np.float64)[:, None] - quad[0][1]
    # Position in fractions of the aligned image, relative to the ellipse centre, in units of its radii.
    u = (inverse[0, 0] * x + inverse[0, 1] * y - MASK_CENTRE[0]) / MASK_RADII[0]
    v = (inverse[1, 0] * x + inverse[1, 1] * y - MASK_CENTRE[1]) / MASK_RADII[1]
    fade = np.clip((1.0 - np.sqrt(u * u + v * v)) / (1.0 - MASK_OPAQUE_RADIUS), 0.0, 1.0)
    return (fade * fade * (3.0 - 2.0 * fade)).astype(np.float32)
