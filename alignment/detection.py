"""Face detection as the FFHQ recipe of PTI and e4e runs it: dlib's frontal (HOG) detector with one up-sampling step.

The recipe detects on the whole full-resolution photo. That costs 0.4-0.7 s per megapixel on two cores (dlib's
box, and so the landmarks predicted in it, depend on its image pyramid, which is built from the whole photo: no crop
or rescaled copy gives the same box). By default photos up to RECIPE_MAX_PIXELS are detected exactly so, and larger
ones as the recipe would detect a copy downscaled to RECIPE_MAX_PIXELS, so that the time stays bounded
(bench/README.md, "Alignment", measures how far that moves the landmarks); `max_pixels=None` runs the recipe on the
whole photo whatever its size."""
from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from typing import Optional

import dlib
import numpy as np
from PIL import Image

from .errors import AlignmentError
from .image_io import ImageSource, load_image

# By default photos with more pixels than this are detected (and their landmarks predicted) on a downscaled copy:
# at this size the recipe takes about 1.2 s on two cores.
RECIPE_MAX_PIXELS = 3 * 1024 * 1024
# The recipe's up-sampling steps: one, so faces down to about 40 px are found.
RECIPE_UPSAMPLING = 1


@dataclass(frozen=True)
class FaceBox:
    """A detected face: box edges in original image pixels (right and bottom exclusive) and the detector score."""

    left: float  # x of the left edge
    top: float  # y of the top edge
    right: float  # x just past the right edge
    bottom: float  # y just past the bottom edge
    score: float  # dlib's detection confidence (higher is more face-like; weak false hits score near 0)
    scale: tuple[float, float] = (1.0, 1.0)  # original pixels per pixel of the image dlib ran on (x, y)

    @property
    def width(self) -> float:
        """Width of the box in pixels."""
        return self.right - self.left

    @property
    def height(self) -> float:
        """Height of the box in pixels."""
        return self.bottom - self.top

    def to_dlib_rectangle(self) -> dlib.rectangle:
        """dlib's own box (integer, inclusive corners) in the image it ran on, for the landmark predictor."""
        scale_x, scale_y = self.scale
        left, top = round(self.left / scale_x), round(self.top / scale_y)
        right, bottom = round(self.right / scale_x) - 1, round(self.bottom / scale_y) - 1
        return dlib.rectangle(left, top, max(left, right), max(top, bottom))


@dataclass(frozen=True, eq=False)
class DetectionImage:
    """The pixels dlib runs on for a photo: the photo itself, or its copy downscaled to a pixel limit."""

    pixels: np.ndarray  # (height, width, 3) uint8 RGB
    scale: tuple[float, float]  # original pixels per pixel of `pixels` (x, y); (1, 1) for the photo itself


def detection_image(image: Image.Image, max_pixels: Optional[int] = RECIPE_MAX_PIXELS) -> DetectionImage:
    """The image dlib runs on for an RGB photo: the photo itself, or its copy downscaled to `max_pixels`."""
    if max_pixels is not None and (
        isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)) or max_pixels < 1
    ):
        raise AlignmentError(f"max_pixels must be a positive integer or None, got {max_pixels!r}")
    width, height = image.size
    if max_pixels is None or width * height <= max_pixels:
        return DetectionImage(np.asarray(image), (1.0, 1.0))
    factor = (max_pixels / (width * height)) ** 0.5
    size = (max(1, int(width * factor)), max(1, int(height * factor)))
    copy = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=1.0)
    return DetectionImage(np.asarray(copy), (width / size[0], height / size[1]))


# dlib's detector must not run in two threads at once (two app sessions detecting together corrupted the heap):
# every use of it holds this lock.
_DETECTOR_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def frontal_face_detector() -> dlib.fhog_object_detector:
    """dlib's HOG frontal face detector (built once); run it only while holding `_DETECTOR_LOCK`."""
    return dlib.get_frontal_face_detector()


def faces_in(detection: DetectionImage) -> list[FaceBox]:
    """Every face dlib finds in a detection image, in original image coordinates, most confident first."""
    with _DETECTOR_LOCK:
        rectangles, scores, _ = frontal_face_detector().run(detection.pixels, RECIPE_UPSAMPLING, 0.0)
    scale_x, scale_y = detection.scale
    faces = [
        FaceBox(
            left=rect.left() * scale_x,
            top=rect.top() * scale_y,
            right=(rect.right() + 1) * scale_x,
            bottom=(rect.bottom() + 1) * scale_y,
            score=float(score),
            scale=detection.scale,
        )
        for rect, score in zip(rectangles, scores)
    ]
    return sorted(faces, key=lambda face: face.score, reverse=True)


def detect_faces(image: ImageSource, *, max_pixels: Optional[int] = RECIPE_MAX_PIXELS) -> list[FaceBox]:
    """Every face dlib finds in the image, in original image coordinates, most confident first (may be empty);
    photos above `max_pixels` are detected on a downscaled copy (None: never)."""
    return faces_in(detection_image(load_image(image), max_pixels))
