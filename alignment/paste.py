"""Paste-back: warp an edited aligned face into the original photo through the inverse quad transform, feathered."""
from __future__ import annotations

import functools
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
# The mask is drawn once at this size (8-bit) in the aligned frame and warped into the photo like the face.
MASK_RESOLUTION = 512


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
    result = original.copy()
    region = _quad_region(aligned_face.quad, original.size)
    if region is None:
        return result
    # Shrinking is anti-aliased first (Lanczos, to the quad's size in the photo); enlarging is left to the warp.
    side = max(1, round(quad_size(aligned_face.quad)))
    if side < edited.size[0]:
        edited = edited.resize((side, side), Image.Resampling.LANCZOS)
    warped = _warp_into_photo(edited, aligned_face.quad, region, Image.Resampling.BICUBIC)
    mask = _warp_into_photo(_aligned_mask(), aligned_face.quad, region, Image.Resampling.BILINEAR)
    result.paste(warped, region[:2], mask)
    return result


def face_mask(aligned_face: AlignedFace) -> np.ndarray:
    """The paste-back mask over the original photo: (height, width) float32, 1 on the face, 0 past its feather."""
    width, height = aligned_face.original_size
    mask = np.zeros((height, width), dtype=np.float32)
    region = _quad_region(aligned_face.quad, (width, height))
    if region is not None:
        left, top, right, bottom = region
        warped = _warp_into_photo(_aligned_mask(), aligned_face.quad, region, Image.Resampling.BILINEAR)
        mask[top:bottom, left:right] = np.asarray(warped, dtype=np.float32) / 255.0
    return mask


@functools.lru_cache(maxsize=1)
def _aligned_mask() -> Image.Image:
    """The feathered elliptical face mask in the aligned frame (mode L, MASK_RESOLUTION square; never modified)."""
    centres = (np.arange(MASK_RESOLUTION, dtype=np.float64) + 0.5) / MASK_RESOLUTION
    u = (centres[None, :] - MASK_CENTRE[0]) / MASK_RADII[0]
    v = (centres[:, None] - MASK_CENTRE[1]) / MASK_RADII[1]
    fade = np.clip((1.0 - np.sqrt(u * u + v * v)) / (1.0 - MASK_OPAQUE_RADIUS), 0.0, 1.0)
    return Image.fromarray(np.rint(fade * fade * (3.0 - 2.0 * fade) * 255.0).astype(np.uint8))


def _warp_into_photo(image: Image.Image, quad: np.ndarray, region: tuple[int, int, int, int], resample) -> Image.Image:
    """A square image of the aligned frame (any size) warped onto `region` (left, top, right, bottom) of the photo."""
    left, top, right, bottom = region
    quad = np.asarray(quad, dtype=np.float64)
    # Photo (continuous coordinates) -> fractions of the aligned square -> pixels of `image`.
    inverse = image.size[0] * np.linalg.inv(np.stack([quad[3] - quad[0], quad[1] - quad[0]], axis=1))
    offset = inverse @ (np.array([left, top], dtype=np.float64) - quad[0] - 0.5)
    coefficients = (inverse[0, 0], inverse[0, 1], offset[0], inverse[1, 0], inverse[1, 1], offset[1])
    return image.transform((right - left, bottom - top), Image.Transform.AFFINE, coefficients, resample)


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
