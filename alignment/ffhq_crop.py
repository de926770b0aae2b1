"""The FFHQ alignment recipe (the FFHQ dataset tool's `recreate_aligned_images`): the oriented crop quad from
68 landmarks, and the shrink / crop / reflect-pad / quad transform that renders it at `output_size`.

Coordinates: points are in pixel units with pixel centres at integers (as dlib's landmarks are); PIL's
transforms use continuous coordinates in which pixel i spans [i, i + 1], hence the `+ 0.5` below.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from .errors import AlignmentError

# The quad is rendered from a working copy in which it spans at most this many times `output_size` pixels (shrunk
# with Lanczos when larger, after a box reduction where the factor is over 3; FFHQ shrinks by an integer factor
# once past 4x).
MAX_SUPERSAMPLING = 2.0
# The quad transform samples at this multiple of `output_size` (then Lanczos down) unless the quad is under half
# of it, so that a rotation at about 1:1 scale does not soften the image (FFHQ always transforms at 4096 px).
TRANSFORM_SUPERSAMPLING = 2
# Where the quad leaves the photo, FFHQ reflect-pads it, blurs the padding and fades it to the median colour. Those
# layers are smooth, so they are computed on a copy in which the quad spans at most this fraction of `output_size`
# and rendered separately; the photo's own pixels keep the working copy's full resolution.
PADDING_RESOLUTION = 0.5


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
    scale = min(1.0, MAX_SUPERSAMPLING * output_size / size)
    border = max(int(np.rint(size * scale * 0.1)), 3)

    # Crop around the quad (plus border), shrinking in the same step when the quad is much larger than the output.
    margin = border / scale
    width, height = image.size
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

    # Padding (left, top, right, bottom) needed where the quad comes within the border of the working copy's edge.
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
    padding = None
    if pad.max() > border - 4:
        pad = np.maximum(pad, max(int(np.rint(size * 0.3)), 1))
        padding = _padding_layers(work, corners, pad, size, output_size)

    transform_size = output_size * (TRANSFORM_SUPERSAMPLING if size > output_size / 2 else 1)
    aligned = work.transform(
        (transform_size, transform_size),
        Image.Transform.QUAD,
        corners.flatten().tolist(),
        Image.Resampling.BILINEAR,
        fillcolor=padding.median if padding is not None else None,
    )
    if transform_size != output_size:
        aligned = aligned.resize((output_size, output_size), Image.Resampling.LANCZOS)
    if padding is None:
        return aligned
    keep = np.asarray(padding.keep, dtype=np.float32)[:, :, None]
    blended = np.asarray(aligned, dtype=np.float32) * keep + np.asarray(padding.fill, dtype=np.float32)
    return Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8))


@dataclass(frozen=True)
class _PaddingLayers:
    """FFHQ's padding as two aligned layers: result = aligned photo * keep + fill."""

    keep: Image.Image  # mode F, output_size square: weight of the photo's own pixels (0 in the padding)
    fill: Image.Image  # RGB, output_size square: the blurred reflection and the median colour, already weighted
    median: tuple[int, int, int]  # the median colour the far padding fades to


def _padding_layers(
    work: Image.Image, corners: np.ndarray, pad: np.ndarray, size: float, output_size: int
) -> _PaddingLayers:
    """FFHQ's reflect padding of `work` by `pad` (left, top, right, bottom), blurred and faded to the median colour.

    FFHQ computes `photo * (1 - b) + blur * b` and then fades that towards the median colour by `m`, where `b` and
    `m` grow from the photo's edge outwards. Expanded, that is `photo * keep + fill` with `keep = (1 - b)(1 - m)`
    and `fill = blur * b * (1 - m) + median * m`; both are smooth, so they are computed at a lower resolution.
    """
    factor = min(1.0, PADDING_RESOLUTION * output_size / size)
    small_size = (max(1, round(work.width * factor)), max(1, round(work.height * factor)))
    small = work if small_size == work.size else work.resize(small_size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    axis_factors = np.array([small_size[0] / work.width, small_size[1] / work.height])
    left, top, right, bottom = (max(int(np.rint(p)), 1) for p in pad * np.tile(axis_factors, 2))
    canvas = np.pad(np.asarray(small), ((top, bottom), (left, right), (0, 0)), mode="reflect")
    height, width = canvas.shape[:2]
    y = np.arange(height, dtype=np.float32)[:, None]
    x = np.arange(width, dtype=np.float32)[None, :]
    # 1 at the canvas's outer edge, 0 where the photo's pixels begin, negative inside them.
    edge = np.maximum(
        1.0 - np.minimum(x / left, (width - 1 - x) / right),
        1.0 - np.minimum(y / top, (height - 1 - y) / bottom),
    )[:, :, None]
    blur_weight = np.clip(edge * 3.0 + 1.0, 0.0, 1.0)
    median_weight = np.clip(edge, 0.0, 1.0)
    blurred = np.asarray(Image.fromarray(canvas).filter(ImageFilter.GaussianBlur(size * factor * 0.02)), np.float32)
    photo = canvas.astype(np.float32)
    median = np.median(photo + (blurred - photo) * blur_weight, axis=(0, 1))
    fill = blurred * blur_weight * (1.0 - median_weight) + median * median_weight
    keep = (1.0 - blur_weight) * (1.0 - median_weight)

    small_corners = (corners * axis_factors + [left, top]).flatten().tolist()
    square = (output_size, output_size)
    return _PaddingLayers(
        keep=Image.fromarray(keep[:, :, 0]).transform(
            square, Image.Transform.QUAD, small_corners, Image.Resampling.BILINEAR
        ),
        fill=Image.fromarray(np.clip(np.rint(fill), 0, 255).astype(np.uint8)).transform(
            square, Image.Transform.QUAD, small_corners, Image.Resampling.BILINEAR
        ),
        median=tuple(int(v) for v in np.rint(median)),
    )
