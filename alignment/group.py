"""Every face of a group photo: found by the recipe, checked, each FFHQ-aligned, numbered left to right."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
from PIL import Image, ImageDraw

from .align import (
    DEFAULT_OUTPUT_SIZE,
    MIN_FACE_SCORE,
    AlignedFace,
    aligned_from_landmarks,
    checked_output_size,
    offered_faces,
)
from .detection import RECIPE_MAX_PIXELS, FaceBox, detection_image, faces_in
from .errors import AlignmentError, NoFaceError
from .image_io import ImageSource, load_image
from .landmarks import landmark_predictor, landmarks_in

# A face whose detection box is narrower than this (pixels of the photo) is skipped: its aligned crop (about twice
# the box) would be enlarged more than about 8x to the generator's 1024 px, too blurred to invert well.
MIN_GROUP_FACE_SIZE = 64
# At most this many faces of one photo are inverted together (the largest are kept). Each face adds a projection
# and, in the official multi-ID schedule, one tuning update per epoch: about 8 times a single inversion's time for 8
# faces (a few minutes on a GPU with the paper's settings; an estimate, not measured on a GPU).
DEFAULT_MAX_FACES = 8


@dataclass(frozen=True)
class SkippedFace:
    """A detection that is not aligned, and why."""

    box: FaceBox
    reason: str


@dataclass(frozen=True, eq=False)
class GroupAlignment:
    """The faces of one photo to invert together, left to right (face k in previews is `faces[k - 1]`)."""

    faces: tuple[AlignedFace, ...]
    skipped: tuple[SkippedFace, ...]  # most confident first
    original_size: tuple[int, int]  # (width, height) of the upright photo


def align_faces(
    image_or_path: ImageSource,
    *,
    output_size: int = DEFAULT_OUTPUT_SIZE,
    predictor_path: Union[str, os.PathLike, None] = None,
    max_pixels: Optional[int] = RECIPE_MAX_PIXELS,
    min_face_size: int = MIN_GROUP_FACE_SIZE,
    max_faces: int = DEFAULT_MAX_FACES,
) -> GroupAlignment:
    """FFHQ-align every usable face of a photo, each as `align_face` would (the same recipe and landmarks).

    Skipped, each with its reason: weak detections (below MIN_FACE_SCORE, unless it is the only one), faces whose box
    is under `min_face_size` pixels, faces cut off at the photo's border (landmarks outside it), and beyond the
    `max_faces` largest. Raises NoFaceError, naming every reason, when no face is left.
    """
    output_size = checked_output_size(output_size)
    for name, value in (("min_face_size", min_face_size), ("max_faces", max_faces)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise AlignmentError(f"{name} must be a positive integer, got {value!r}")
    image = load_image(image_or_path)
    detection = detection_image(image, max_pixels)
    found = faces_in(detection)
    offered = offered_faces(found)
    skipped = [SkippedFace(face, f"a weak detection (score {face.score:.2f} < {MIN_FACE_SCORE}), probably not a face")
               for face in found[len(offered):]]
    predictor = landmark_predictor(predictor_path) if offered else None
    usable: list[tuple[int, np.ndarray]] = []
    for index, face in enumerate(offered):
        if face.width < min_face_size:
            skipped.append(SkippedFace(face, f"too small: a {face.width:.0f} px box, under the {min_face_size} px "
                                             f"needed (min_face_size)"))
            continue
        landmarks = landmarks_in(detection, face, predictor)
        outside = _landmarks_outside(landmarks, image.size)
        if outside:
            skipped.append(SkippedFace(face, f"cut off at the photo's border: {outside} of its 68 landmarks lie "
                                             f"outside the photo"))
            continue
        usable.append((index, landmarks))
    by_size = sorted(usable, key=lambda item: -offered[item[0]].width * offered[item[0]].height)
    for index, _ in by_size[max_faces:]:
        skipped.append(SkippedFace(offered[index], f"over the limit of {max_faces} faces per photo (max_faces); "
                                                   f"the largest faces are kept"))
    kept = sorted(by_size[:max_faces], key=lambda item: _centre(offered[item[0]]))
    if not kept:
        reasons = "; ".join(f"face at ({s.box.left:.0f}, {s.box.top:.0f}): {s.reason}" for s in skipped)
        raise NoFaceError("no usable face was found in the image" + (f" ({reasons})" if reasons else "")
                          + "; use a photo in which the faces are frontal, well lit and clearly visible")
    weak = tuple(found[len(offered):])
    faces = tuple(aligned_from_landmarks(image, landmarks, offered, index, weak, output_size)
                  for index, landmarks in kept)
    skipped.sort(key=lambda item: -item.box.score)
    return GroupAlignment(faces=faces, skipped=tuple(skipped), original_size=image.size)


def draw_faces(photo: ImageSource, group: GroupAlignment, *, max_side: int = 1024) -> Image.Image:
    """A preview of the photo (at most `max_side` px) with each aligned face's box and number, skipped ones grey."""
    photo = load_image(photo)
    if photo.size != group.original_size:
        raise AlignmentError(f"the photo is {photo.size[0]}x{photo.size[1]} but the faces were found in a "
                             f"{group.original_size[0]}x{group.original_size[1]} photo")
    scale = min(1.0, max_side / max(photo.size))
    preview = photo.resize((max(1, round(photo.width * scale)), max(1, round(photo.height * scale))),
                           Image.Resampling.LANCZOS) if scale < 1 else photo.copy()
    draw = ImageDraw.Draw(preview)
    width = max(2, round(max(preview.size) / 300))
    for skipped in group.skipped:
        draw.rectangle(_scaled_box(skipped.box, scale), outline=(160, 160, 160), width=max(1, width // 2))
    for number, face in enumerate(group.faces, start=1):
        left, top, right, bottom = _scaled_box(face.box, scale)
        draw.rectangle((left, top, right, bottom), outline=(255, 200, 0), width=width)
        size = max(12, round((bottom - top) * 0.35))
        label = str(number)
        text_box = draw.textbbox((left, top), label, font_size=size)
        label_top = max(0, top - (text_box[3] - text_box[1]) - 2 * width)
        text_box = draw.textbbox((left + width, label_top), label, font_size=size)
        draw.rectangle((text_box[0] - width, text_box[1] - width, text_box[2] + width, text_box[3] + width),
                       fill=(255, 200, 0))
        draw.text((left + width, label_top), label, fill=(0, 0, 0), font_size=size)
    return preview


def _landmarks_outside(landmarks: np.ndarray, size: tuple[int, int]) -> int:
    """How many landmarks lie outside the photo's pixels."""
    x, y = landmarks[:, 0], landmarks[:, 1]
    return int(np.count_nonzero((x < 0) | (y < 0) | (x > size[0] - 1) | (y > size[1] - 1)))


def _centre(box: FaceBox) -> tuple[float, float]:
    """The box's centre (x, y): the left-to-right order of faces (top to bottom where x ties)."""
    return ((box.left + box.right) / 2, (box.top + box.bottom) / 2)


def _scaled_box(box: FaceBox, scale: float) -> tuple[float, float, float, float]:
    """The box's edges in a preview scaled by `scale` (inclusive right and bottom for ImageDraw)."""
    return (box.left * scale, box.top * scale, box.right * scale - 1, box.bottom * scale - 1)
