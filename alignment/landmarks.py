"""dlib's 68-point landmark predictor: located through the weights registry or a local file, sha256-checked."""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Union

import dlib
import numpy as np
from PIL import Image

from .detection import DetectionImage, FaceBox, detection_image
from .errors import LandmarkModelError

# Key of the model in `pti.weights` (Hub repo public-data/dlib_face_landmark_model).
LANDMARK_MODEL_KEY = "dlib-landmarks-68"
# sha256 of shape_predictor_68_face_landmarks.dat (99,693,937 bytes); any other file is refused.
LANDMARK_MODEL_SHA256 = "fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f"


def landmark_predictor(predictor_path: Union[str, os.PathLike, None] = None) -> dlib.shape_predictor:
    """The 68-point predictor from `predictor_path`, or from the weights registry when None (loaded once per file)."""
    path = _resolve_predictor_path(predictor_path)
    try:
        stat = path.stat()
    except OSError as error:
        raise LandmarkModelError(f"cannot read the landmark model {path}: {error}") from None
    return _load_verified_predictor(str(path), stat.st_size, stat.st_mtime_ns)


def predict_landmarks(image: Image.Image, box: FaceBox, predictor: dlib.shape_predictor) -> np.ndarray:
    """The 68 landmarks (x, y) of the face in `box` (from `detect_faces(image)`) of an RGB photo, in its pixels."""
    return landmarks_in(detection_image(image), box, predictor)


def landmarks_in(detection: DetectionImage, box: FaceBox, predictor: dlib.shape_predictor) -> np.ndarray:
    """The 68 landmarks as the recipe predicts them: in dlib's own box, on the image dlib detected in, mapped to
    original image pixels (pixel centres kept) as a (68, 2) array."""
    shape = predictor(detection.pixels, box.to_dlib_rectangle())
    points = np.array([(point.x, point.y) for point in shape.parts()], dtype=np.float64)
    return (points + 0.5) * detection.scale - 0.5


def _resolve_predictor_path(predictor_path: Union[str, os.PathLike, None]) -> Path:
    """The local file to load: the given path, or the registry's cached/downloaded copy."""
    if predictor_path is not None:
        return Path(predictor_path).resolve()
    from pti.weights import WeightsError, resolve

    try:
        return Path(resolve(LANDMARK_MODEL_KEY)).resolve()
    except WeightsError as error:
        raise LandmarkModelError(f"the dlib landmark model is not available: {error}") from error


@functools.lru_cache(maxsize=4)
def _load_verified_predictor(path: str, size: int, mtime_ns: int) -> dlib.shape_predictor:
    """Check the file's sha256 and load it; cached per (path, size, mtime), so a changed file is checked again.

    The digest comes from the weights registry's hash cache, so a file that `resolve` has just checked (or any
    file checked at an earlier start) is not read twice."""
    from pti.weights import file_sha256

    digest = file_sha256(path)
    if digest != LANDMARK_MODEL_SHA256:
        raise LandmarkModelError(
            f"{path} is not dlib's shape_predictor_68_face_landmarks.dat: sha256 {digest} "
            f"({size:,} bytes), expected {LANDMARK_MODEL_SHA256} (99,693,937 bytes)"
        )
    return dlib.shape_predictor(path)
