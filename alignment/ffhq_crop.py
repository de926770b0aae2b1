"""The FFHQ alignment recipe (the FFHQ dataset tool's `recreate_aligned_images`): the oriented crop quad from
68 landmarks, and the shrink / crop / reflect-pad / quad transform that renders it at `output_size`.

Coordinates: points are in pixel units with pixel centres at integers (as dlib's landmarks are); PIL's
transforms use continuous coordinates in which pixel i spans [i, i + 1], hence the `+ 0.5` below.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageFilter

from .errors import AlignmentError

# The quad is rendered from a working copy in which it spans at most this many times `output_size` pixels (shrunk
# with Lanczos when larger, after a box reduction where the factor is over 3; FFHQ shrinks by an integer factor
# once past 4x) ...
MAX_SUPERSAMPLING = 2.0
# ... or this many times when the quad leaves the photo: the reflect-padded canvas is about 3x the quad's area, and
# blurring and blending it at full resolution would take seconds on a large photo for no visible gain.
MAX_SUPERSAMPLING_PADDED = 1.0
# The quad transform samples at twice `output_size` (then Lanczos down) unless the quad is under half of it, so a
# rotation at about 1:1 scale does not soften the image (FFHQ always transforms at 4096 px).
TRANSFORM_SUPERSAMPLING = 2
# Pixels used to estimate the median colour that the far padding fades to.
MEDIAN_SAMPLE_PIXELS = 1 << 20


def ffhq_quad(landmarks: np.ndarray) -> np.ndarray:
    """The FFHQ crop quad (4, 2): the corners that become the aligned top-left, bottom-left, bottom-right, top-right."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.shape != (68, 2):
        raise AlignmentError(f"expected 68 landmarks of shape (68, 2), got {landmarks.shape}")
    eye_left = landmarks[36:42].mean(axis=0)
    eye_right = landmarks[42:48].mean(axis=0)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (landmarks[48] + landmarks[54]) * 0.5
    eye_to_mouth = mouth_avg - eye_avg

    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    length = np.hypot(*x)
    if length < 1e-6:
        raise AlignmentError("the landmarks are degenerate (eyes and mouth coincide); cannot orient the face")
    x = x / length * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    centre = eye_avg + eye_to_mouth * 0.1
    return np.stack([centre - x - y, centre - x + y, centre + x + y, centre + x - y])


def quad_size(quad: np.ndarray) -> float:
    """Side length of the quad in pixels of the image it lies in."""
    return float(np.hypot(*(np.asarray(quad)[3] - np.asarray(quad)[0])))


def aligned_to_original(points: np.ndarray, quad: np.ndarray, output_size: int) -> np.ndarray:
    """Map (N, 2) pixel coordinates of the aligned image (side `output_size`) into the original image."""
    quad = np.asarray(quad, dtype=np.float64)
    axes = np.stack([quad[3] - quad[0], quad[1] - quad[0]], axis=1)
    return quad[0] + ((np.asarray(points, dtype=np.float64) + 0.5) / output_size) @ axes.T


def original_to_aligned(points: np.ndarray, quad: np.ndarray, output_size: int) -> np.ndarray:
    """Map (N, 2) pixel coordinates of the original image into the aligned image (side `output_size`)."""
    quad = np.asarray(quad, dtype=np.float64)
    axes = np.stack([quad[3] - quad[0], quad[1] - quad[0]], axis=1)
    return output_size * (np.asarray(points, dtype=np.float64) - quad[0]) @ np.linalg.inv(axes).T - 0.5


def render_aligned(image: Image.Image, quad: np.ndarray, output_size: int) -> Image.Image:
    """Render the quad of an RGB image as an `output_size` square, the FFHQ way (reflect-padded where it leaves it)."""
    corners = np.asarray(quad, dtype=np.float64) + 0.5
    size = quad_size(quad)
    width, height = image.size
    leaves_image = corners.min() < 4 or corners[:, 0].max() > width - 4 or corners[:, 1].max() > height - 4
    supersampling = MAX_SUPERSAMPLING_PADDED if leaves_image else MAX_SUPERSAMPLING
    scale = min(1.0, supersampling * output_size / size)
    border = max(int(np.rint(size * scale * 0.1)), 3)

    # Crop around the quad (plus border), shrinking in the same step when the quad is much larger than the output.
    margin = border / scale
    left = max(math.floor(corners[:, 0].min() - margin), 0)
    top = max(math.floor(corners[:, 1].min() - margin), 0)
    right = min(math.ceil(corners[:, 0].max() + margin), width)
    bottom = min(math.ceil(corners[:, 1].max() + margin), height)
    if right <= left or bottom <= top:
        raise AlignmentError("the face's crop lies entirely outside the image")
    work_size = (max(1, round((right - left) * scale)), max(1, round((bottom - top) * scale)))
    if work_size == (right - left, bottom - top):
        work = image.crop((left, top, right, bottom))
    else:
        work = image.resize(work_size, Image.Resampling.LANCZOS, box=(left, top, right, bottom), reducing_gap=3.0)
    corners = (corners - [left, top]) * [work_size[0] / (right - left), work_size[1] / (bottom - top)]
    size *= scale

    # Pad by reflection where the quad leaves the image, blurred and faded to the median colour further out.
    low = np.floor(corners.min(axis=0)).astype(int)
    high = np.ceil(corners.max(axis=0)).astype(int)
    pad = np.array(
        [
            max(border - low[0], 0),
            max(border - low[1], 0),
            max(high[0] - work_size[0] + border, 0),
            max(high[1] - work_size[1] + border, 0),
        ]
    )
    if pad.max() > border - 4:
        pad = np.maximum(pad, max(int(np.rint(size * 0.3)), 1))
        work = _pad_reflect_blended(work, pad, blur_sigma=size * 0.02)
        corners = corners + pad[:2]

    transform_size = output_size * (TRANSFORM_SUPERSAMPLING if size > output_size / 2 else 1)
    aligned = work.transform(
        (transform_size, transform_size), Image.Transform.QUAD, corners.flatten().tolist(), Image.Resampling.BILINEAR
    )
    if transform_size != output_size:
        aligned = aligned.resize((output_size, output_size), Image.Resampling.LANCZOS)
    return aligned


def _pad_reflect_blended(image: Image.Image, pad: np.ndarray, blur_sigma: float) -> Image.Image:
    """Reflect-pad by (left, top, right, bottom) pixels; blend the padding towards a blur, then the median colour."""
    left, top, right, bottom = (int(p) for p in pad)
    canvas = Image.fromarray(np.pad(np.asarray(image), ((top, bottom), (left, right), (0, 0)), mode="reflect"))
    width, height = canvas.size
    y = np.arange(height, dtype=np.float32)[:, None]
    x = np.arange(width, dtype=np.float32)[None, :]
    # 1 at the outer edge, 0 where the original pixels begin, negative inside them.
    edge = np.maximum(
        1.0 - np.minimum(x / left, (width - 1 - x) / right),
        1.0 - np.minimum(y / top, (height - 1 - y) / bottom),
    )
    blurred = canvas.filter(ImageFilter.GaussianBlur(blur_sigma))
    canvas = Image.composite(blurred, canvas, _weight_image(edge * 3.0 + 1.0))
    pixels = np.asarray(canvas)
    stride = max(1, math.ceil(math.sqrt(height * width / MEDIAN_SAMPLE_PIXELS)))
    median = tuple(int(v) for v in np.rint(np.median(pixels[::stride, ::stride], axis=(0, 1))))
    return Image.composite(Image.new("RGB", canvas.size, median), canvas, _weight_image(edge))


def _weight_image(weights: np.ndarray) -> Image.Image:
    """Blend weights (clipped to [0, 1]) as an 8-bit mask image for `Image.composite`."""
    return Image.fromarray(np.rint(np.clip(weights, 0.0, 1.0) * 255.0).astype(np.uint8))
