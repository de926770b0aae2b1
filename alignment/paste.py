"""Paste-back: warp an edited aligned face into the original photo through the inverse quad transform, feathered."""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np
from PIL import Image, ImageChops, ImageDraw

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
    return paste_back_faces(original, [aligned_face], [edited])


class PlacedFace(Protocol):
    """Where a face sits in its photo: what paste-back needs (an AlignedFace is one; so is a FacePlacement)."""

    quad: np.ndarray  # (4, 2) corners of the aligned crop in the photo
    landmarks: np.ndarray  # (68, 2) in the photo
    original_size: tuple[int, int]  # (width, height) of the photo


@dataclass(frozen=True, eq=False)
class FacePlacement:
    """A face's place in its photo without the aligned image (e.g. read back from a file)."""

    quad: np.ndarray
    landmarks: np.ndarray
    original_size: tuple[int, int]


def paste_back_faces(original: ImageSource, aligned_faces: Sequence[PlacedFace],
                     edited: Sequence[ImageSource]) -> Image.Image:
    """The original photo with every edited aligned face warped back in, each under its feathered mask.

    Where faces overlap, no face's mask paints over another face: each mask is cut out where another face's
    landmarks hull lies, and larger faces (nearer the camera) are pasted last, on top. Pixels outside every mask
    are the original's."""
    original = load_image(original)
    if len(aligned_faces) != len(edited):
        raise AlignmentError(f"{len(aligned_faces)} aligned faces but {len(edited)} edited images")
    for face in aligned_faces:
        if original.size != face.original_size:
            raise AlignmentError(
                f"the original image is {original.size[0]}x{original.size[1]} but the face was aligned from a "
                f"{face.original_size[0]}x{face.original_size[1]} image"
            )
    edited = [load_image(image) for image in edited]
    for image in edited:
        if image.size[0] != image.size[1]:
            raise AlignmentError(f"the edited face must be square, got {image.size[0]}x{image.size[1]}")
    result = original.copy()
    hulls = [_hull(face.landmarks) for face in aligned_faces]
    order = sorted(range(len(aligned_faces)), key=lambda i: quad_size(aligned_faces[i].quad))
    for i in order:
        face, image = aligned_faces[i], edited[i]
        region = _quad_region(face.quad, original.size)
        if region is None:
            continue
        # Shrinking is anti-aliased first (Lanczos, to the quad's size in the photo); enlarging is left to the warp.
        side = max(1, round(quad_size(face.quad)))
        if side < image.size[0]:
            image = image.resize((side, side), Image.Resampling.LANCZOS)
        warped = _warp_into_photo(image, face.quad, region, Image.Resampling.BICUBIC)
        mask = _warp_into_photo(_aligned_mask(), face.quad, region, Image.Resampling.BILINEAR)
        others = [hull for j, hull in enumerate(hulls) if j != i]
        if others:
            mask = ImageChops.subtract(mask, _hull_mask(others, region))
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


def _hull(points: np.ndarray) -> np.ndarray:
    """The convex hull of (N, 2) points, counter-clockwise (Andrew's monotone chain)."""
    points = sorted(map(tuple, np.asarray(points, dtype=np.float64)))

    def turns_left(a, b, c) -> bool:
        return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]) > 0

    def half(ordered):
        chain = []
        for point in ordered:
            while len(chain) >= 2 and not turns_left(chain[-2], chain[-1], point):
                chain.pop()
            chain.append(point)
        return chain[:-1]

    return np.array(half(points) + half(points[::-1]))


def _hull_mask(hulls: Sequence[np.ndarray], region: tuple[int, int, int, int]) -> Image.Image:
    """An 8-bit mask of `region` of the photo: 255 inside any of the hulls (pixel centres at integers), else 0."""
    left, top, right, bottom = region
    mask = Image.new("L", (right - left, bottom - top), 0)
    draw = ImageDraw.Draw(mask)
    for hull in hulls:
        draw.polygon([(x - left, y - top) for x, y in hull], fill=255)
    return mask


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
