"""Face detection with dlib's frontal (HOG) detector, keeping its scores, on a bounded-size copy of the photo."""
from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

import dlib
import numpy as np
from PIL import Image

from .image_io import ImageSource, load_image

# Detection runs on a copy with at most this many pixels (large photos are downscaled), so its time is bounded.
# dlib's detector finds faces of about 80 px and more in it; when it finds none, it runs once more on the copy
# up-sampled 2x (4x the pixels, about 4x the time), which finds faces down to about 40 px.
DETECTION_MAX_PIXELS = 1024 * 1024


@dataclass(frozen=True)
class FaceBox:
    """A detected face: box edges in original image pixels (right and bottom exclusive) and the detector score."""

    left: float  # x of the left edge
    top: float  # y of the top edge
    right: float  # x just past the right edge
    bottom: float  # y just past the bottom edge
    score: float  # dlib's detection confidence (higher is more face-like; weak false hits score near 0)

    @property
    def width(self) -> float:
        """Width of the box in pixels."""
        return self.right - self.left

    @property
    def height(self) -> float:
        """Height of the box in pixels."""
        return self.bottom - self.top

    def to_dlib_rectangle(self) -> dlib.rectangle:
        """The box as a dlib rectangle (integer, inclusive corners) for the landmark predictor."""
        left, top = int(round(self.left)), int(round(self.top))
        return dlib.rectangle(left, top, max(left, int(round(self.right)) - 1), max(top, int(round(self.bottom)) - 1))


# dlib's detector must not run in two threads at once (two app sessions detecting together corrupted the heap):
# every use of it holds this lock.
_DETECTOR_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def frontal_face_detector() -> dlib.fhog_object_detector:
    """dlib's HOG frontal face detector (built once); run it only while holding `_DETECTOR_LOCK`."""
    return dlib.get_frontal_face_detector()


def detect_faces(image: ImageSource) -> list[FaceBox]:
    """Every face dlib finds in the image, in original image coordinates, most confident first (may be empty)."""
    image = load_image(image)
    width, height = image.size
    scale = min(1.0, (DETECTION_MAX_PIXELS / (width * height)) ** 0.5)
    small_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = image if small_size == image.size else image.resize(small_size, Image.Resampling.BILINEAR, reducing_gap=1.0)
    pixels = np.asarray(small)
    with _DETECTOR_LOCK:
        detector = frontal_face_detector()
        rectangles, scores, _ = detector.run(pixels, 0, 0.0)
        if not rectangles:
            rectangles, scores, _ = detector.run(pixels, 1, 0.0)
    scale_x, scale_y = width / small_size[0], height / small_size[1]
    faces = [
        FaceBox(
            left=rect.left() * scale_x,
            top=rect.top() * scale_y,
            right=(rect.right() + 1) * scale_x,
            bottom=(rect.bottom() + 1) * scale_y,
            score=float(score),
        )
        for rect, score in zip(rectangles, scores)
    ]
    return sorted(faces, key=lambda face: face.score, reverse=True)
