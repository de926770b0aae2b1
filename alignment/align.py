"""The entry point: photo -> detected faces -> landmarks -> FFHQ-aligned face (`AlignedFace`)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
from PIL import Image

from .detection import FaceBox, detect_faces
from .errors import AlignmentError, FaceIndexError, NoFaceError
from .ffhq_crop import aligned_to_original, ffhq_quad, original_to_aligned, render_aligned
from .image_io import ImageSource, load_image
from .landmarks import landmark_predictor, predict_landmarks

DEFAULT_OUTPUT_SIZE = 1024


@dataclass(frozen=True, eq=False)
class AlignedFace:
    """An FFHQ-aligned face and how it sits in the original photo (all coordinates in original image pixels)."""

    image: Image.Image  # the aligned face, RGB, output_size x output_size
    quad: np.ndarray  # (4, 2) corners of the crop: aligned top-left, bottom-left, bottom-right, top-right
    landmarks: np.ndarray  # (68, 2) dlib landmarks (x, y)
    box: FaceBox  # the chosen face's detection box
    score: float  # the chosen face's detection score
    faces: tuple[FaceBox, ...]  # every face found, most confident first
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
) -> AlignedFace:
    """Detect the faces in a photo and FFHQ-align one: the most confident, or `faces[face_index]` when given."""
    if isinstance(output_size, bool) or not isinstance(output_size, (int, np.integer)) or output_size < 1:
        raise AlignmentError(f"output_size must be a positive integer, got {output_size!r}")
    image = load_image(image_or_path)
    faces = tuple(detect_faces(image))
    if not faces:
        raise NoFaceError(
            "no face was found in the image; use a frontal, well-lit photo in which the face is clearly visible"
        )
    index = _checked_face_index(face_index, len(faces))
    box = faces[index]
    landmarks = predict_landmarks(image, box, landmark_predictor(predictor_path))
    quad = ffhq_quad(landmarks)
    aligned = render_aligned(image, quad, int(output_size))
    landmarks.setflags(write=False)
    quad.setflags(write=False)
    return AlignedFace(
        image=aligned,
        quad=quad,
        landmarks=landmarks,
        box=box,
        score=box.score,
        faces=faces,
        face_index=index,
        original_size=image.size,
    )


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
