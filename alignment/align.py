"""The entry point: photo -> detected faces -> landmarks -> FFHQ-aligned face (`AlignedFace`)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
from PIL import Image

from .detection import RECIPE_MAX_PIXELS, FaceBox, detection_image, faces_in
from .errors import AlignmentError, FaceIndexError, NoFaceError
from .ffhq_crop import aligned_to_original, ffhq_quad, original_to_aligned, render_aligned
from .image_io import ImageSource, load_image
from .landmarks import landmark_predictor, landmarks_in

DEFAULT_OUTPUT_SIZE = 1024
# Detections scoring below this are not offered as faces (unless nothing scores higher): with the recipe's
# up-sampling, dlib also fires weakly on face-like things (the round mission patch on the astronaut's suit scores
# 0.10-0.16; the faces of the test photos and their variants score 0.7-1.6, a 37 px face 0.16).
MIN_FACE_SCORE = 0.3


@dataclass(frozen=True, eq=False)
class AlignedFace:
    """An FFHQ-aligned face and how it sits in the original photo (all coordinates in original image pixels)."""

    image: Image.Image  # the aligned face, RGB, output_size x output_size
    quad: np.ndarray  # (4, 2) corners of the crop: aligned top-left, bottom-left, bottom-right, top-right
    landmarks: np.ndarray  # (68, 2) dlib landmarks (x, y)
    box: FaceBox  # the chosen face's detection box
    score: float  # the chosen face's detection score
    faces: tuple[FaceBox, ...]  # every face offered, most confident first: the best and all >= MIN_FACE_SCORE
    weak_faces: tuple[FaceBox, ...]  # the other detections (below MIN_FACE_SCORE), most confident first
    face_index: int  # index of the chosen face in `faces`
    original_size: tuple[int, int]  # (width, height) of the upright original image

    @property
    def output_size(self) -> int:
        """Side of the aligned image in pixels."""
        return self.image.size[0]

    def to_aligned(self, points: np.ndarray) -> np.ndarray:
        """Map (N, 2) original-image pixel coordinates into the aligned image."""
        return original_to_aligned(points, self.quad, self.output_size)

    def to_original(self, points: np.ndarray) -> np.ndarray:
        """Map (N, 2) aligned-image pixel coordinates into the original image."""
        return aligned_to_original(points, self.quad, self.output_size)


def align_face(
    image_or_path: ImageSource,
    *,
    face_index: Optional[int] = None,
    output_size: int = DEFAULT_OUTPUT_SIZE,
    predictor_path: Union[str, os.PathLike, None] = None,
    max_pixels: Optional[int] = RECIPE_MAX_PIXELS,
) -> AlignedFace:
    """Detect the faces in a photo and FFHQ-align one: the most confident, or `faces[face_index]` when given.

    Detection and landmarks follow the FFHQ recipe of PTI and e4e: exactly for photos up to `max_pixels`, on a copy
    downscaled to `max_pixels` for larger ones (None: exactly whatever the size, 0.4-0.7 s per megapixel on two
    cores; see `alignment.detection`)."""
    output_size = checked_output_size(output_size)
    image = load_image(image_or_path)
    detection = detection_image(image, max_pixels)
    found = faces_in(detection)
    faces = offered_faces(found)
    if not faces:
        raise NoFaceError(
            "no face was found in the image; use a frontal, well-lit photo in which the face is clearly visible"
        )
    index = _checked_face_index(face_index, len(faces))
    landmarks = landmarks_in(detection, faces[index], landmark_predictor(predictor_path))
    return aligned_from_landmarks(image, landmarks, faces, index, tuple(found[len(faces):]), output_size)


def offered_faces(found: list[FaceBox]) -> tuple[FaceBox, ...]:
    """The detections offered as faces (most confident first): the best one and every other >= MIN_FACE_SCORE."""
    return tuple(face for rank, face in enumerate(found) if rank == 0 or face.score >= MIN_FACE_SCORE)


def aligned_from_landmarks(image: Image.Image, landmarks: np.ndarray, faces: tuple[FaceBox, ...], index: int,
                           weak_faces: tuple[FaceBox, ...], output_size: int) -> AlignedFace:
    """The AlignedFace of `faces[index]` of an RGB photo, from its 68 landmarks: the FFHQ quad, rendered."""
    quad = ffhq_quad(landmarks)
    aligned = render_aligned(image, quad, output_size)
    landmarks.setflags(write=False)
    quad.setflags(write=False)
    return AlignedFace(
        image=aligned,
        quad=quad,
        landmarks=landmarks,
        box=faces[index],
        score=faces[index].score,
        faces=faces,
        weak_faces=weak_faces,
        face_index=index,
        original_size=image.size,
    )


def checked_output_size(output_size: int) -> int:
    """`output_size` as an int; anything but a positive integer is an AlignmentError."""
    if isinstance(output_size, bool) or not isinstance(output_size, (int, np.integer)) or output_size < 1:
        raise AlignmentError(f"output_size must be a positive integer, got {output_size!r}")
    return int(output_size)


def _checked_face_index(face_index: Optional[int], num_faces: int) -> int:
    """The index to use: 0 (most confident) when None; anything outside 0..num_faces-1 is a FaceIndexError."""
    if face_index is None:
        return 0
    if isinstance(face_index, bool) or not isinstance(face_index, (int, np.integer)):
        raise FaceIndexError(f"face_index must be an integer, got {face_index!r}")
    if not 0 <= face_index < num_faces:
        raise FaceIndexError(
            f"face_index {face_index} is out of range: {num_faces} face(s) found, so it must be 0..{num_faces - 1}"
        )
    return int(face_index)
