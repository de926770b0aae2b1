"""Group photos: every face found, checked, aligned by the recipe and numbered left to right; the preview; every face
pasted back without painting over its neighbours. Group photos are built here from the two test photos."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from alignment import AlignmentError, NoFaceError, align_face
from alignment.align import MIN_FACE_SCORE
from alignment.group import MIN_GROUP_FACE_SIZE, align_faces, draw_faces
from alignment.paste import face_mask, paste_back_faces
import group_photos
from conftest import FACES_DIR
from group_photos import canvas, open_rgb

SIZE = 128


@pytest.fixture(scope="module")
def side_by_side() -> Image.Image:
    return group_photos.side_by_side()


@pytest.fixture(scope="module")
def nearly_touching() -> Image.Image:
    return group_photos.nearly_touching()


def test_every_face_left_to_right_each_as_align_face_aligns_it(side_by_side, landmarks_model_path):
    group = align_faces(side_by_side, output_size=SIZE, predictor_path=landmarks_model_path)
    assert len(group.faces) == 2 and group.skipped == () and group.original_size == side_by_side.size
    centres = [(face.box.left + face.box.right) / 2 for face in group.faces]
    grace_width = side_by_side.width - 768
    assert centres[0] < grace_width < centres[1]  # Grace Hopper first, then the astronaut
    for face in group.faces:
        alone = align_face(side_by_side, face_index=face.face_index, output_size=SIZE,
                           predictor_path=landmarks_model_path)
        assert alone.box == face.box
        assert np.array_equal(alone.landmarks, face.landmarks) and np.array_equal(alone.quad, face.quad)
        assert np.array_equal(np.asarray(alone.image), np.asarray(face.image))


def test_skipped_faces_say_why(landmarks_model_path):
    astronaut = open_rgb("astronaut.png")
    tiny = open_rgb("grace_hopper.jpg").resize((120, 140), Image.Resampling.LANCZOS)  # a 53 px box
    photo = canvas(1100, 700, (astronaut, (0, 0)), (tiny, (560, 100)),
                   (open_rgb("grace_hopper.jpg"), (770, 100)))  # the jaw past the right border
    group = align_faces(photo, output_size=SIZE, predictor_path=landmarks_model_path)
    assert len(group.faces) == 1 and group.faces[0].box.right < 512  # only the astronaut
    reasons = sorted(skipped.reason for skipped in group.skipped)
    assert any(reason.startswith("a weak detection") and f"< {MIN_FACE_SCORE}" in reason for reason in reasons)
    assert any(reason.startswith("too small") and f"{MIN_GROUP_FACE_SIZE} px" in reason for reason in reasons)
    assert any(reason.startswith("cut off at the photo's border") for reason in reasons)
    assert len(group.skipped) == 3


def test_the_face_limit_keeps_the_largest(side_by_side, landmarks_model_path):
    both = align_faces(side_by_side, output_size=SIZE, predictor_path=landmarks_model_path)
    one = align_faces(side_by_side, output_size=SIZE, predictor_path=landmarks_model_path, max_faces=1)
    largest = max(both.faces, key=lambda face: face.box.width * face.box.height)
    assert [face.box for face in one.faces] == [largest.box]
    (skipped,) = one.skipped
    assert "over the limit of 1 faces per photo (max_faces)" in skipped.reason


def test_no_usable_face_names_every_reason(landmarks_model_path):
    small = open_rgb("astronaut.png").resize((154, 154), Image.Resampling.LANCZOS)  # a 37 px face
    with pytest.raises(NoFaceError, match=r"no usable face.*too small: a \d+ px box"):
        align_faces(canvas(400, 400, (small, (100, 100))), output_size=SIZE, predictor_path=landmarks_model_path)
    with pytest.raises(NoFaceError, match="no usable face was found in the image; use a photo"):
        align_faces(canvas(300, 300), output_size=SIZE, predictor_path=landmarks_model_path)


@pytest.mark.parametrize("name, bad", [("max_faces", 0), ("min_face_size", -1), ("max_faces", 2.5)])
def test_bad_limits(landmarks_model_path, name, bad):
    with pytest.raises(AlignmentError, match=f"{name} must be a positive integer"):
        align_faces(FACES_DIR / "astronaut.png", predictor_path=landmarks_model_path, **{name: bad})


def test_the_preview_numbers_each_face_in_its_box(side_by_side, landmarks_model_path):
    group = align_faces(side_by_side, output_size=SIZE, predictor_path=landmarks_model_path)
    preview = np.asarray(draw_faces(side_by_side, group, max_side=800)).astype(int)
    scale = 800 / max(side_by_side.size)
    assert preview.shape[:2] == (round(side_by_side.height * scale), round(side_by_side.width * scale))
    for face in group.faces:
        # The box's outline is drawn in the marker colour along its bottom edge, centred.
        x, y = round((face.box.left + face.box.right) / 2 * scale), round(face.box.bottom * scale) - 2
        assert np.abs(preview[y, x] - [255, 200, 0]).max() <= 1
    with pytest.raises(AlignmentError, match="faces were found in a"):
        draw_faces(side_by_side.crop((0, 0, 100, 100)), group)


def hull_mask(face, size) -> np.ndarray:
    """Pixels strictly inside the face's landmark hull, shrunk by 2 px (away from anti-aliased edges)."""
    from scipy import ndimage
    from scipy.spatial import ConvexHull

    points = face.landmarks[ConvexHull(face.landmarks).vertices]
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).polygon([tuple(p) for p in points], fill=1)
    return ndimage.binary_erosion(np.asarray(mask, bool), iterations=2)


def test_paste_back_of_every_face_leaves_each_neighbour_alone(nearly_touching, landmarks_model_path):
    group = align_faces(nearly_touching, output_size=SIZE, predictor_path=landmarks_model_path)
    assert len(group.faces) == 2
    first, second = group.faces
    masks = [face_mask(face) for face in group.faces]
    assert (np.minimum(*masks) > 0.5).any()  # the feathered masks overlap
    red, blue = Image.new("RGB", (SIZE, SIZE), (255, 0, 0)), Image.new("RGB", (SIZE, SIZE), (0, 0, 255))
    pasted = np.asarray(paste_back_faces(nearly_touching, group.faces, [red, blue])).astype(int)
    original = np.asarray(nearly_touching).astype(int)
    assert pasted.shape == original.shape

    untouched = (masks[0] == 0) & (masks[1] == 0)
    assert np.array_equal(pasted[untouched], original[untouched])
    hulls = [hull_mask(face, nearly_touching.size) for face in group.faces]
    # Inside each face's hull only its own colour was added: no red in the second face, no blue in the first.
    for hull, own, other in ((hulls[0], 0, 2), (hulls[1], 2, 0)):
        assert hull.sum() > 1000
        assert np.array_equal(pasted[hull][:, other] <= original[hull][:, other], np.ones(hull.sum(), bool))
        assert (pasted[hull][:, own] >= original[hull][:, own]).all()
        assert (pasted[hull][:, own] == 255).mean() > 0.5  # the face itself replaced
    # Where the masks overlap outside both hulls, the larger face is on top.
    larger = 0 if first.box.width > second.box.width else 1
    overlap = (masks[0] == 1) & (masks[1] == 1) & ~hulls[0] & ~hulls[1]
    if overlap.any():
        assert (pasted[overlap][:, 2 * larger] == 255).all()


def test_paste_back_needs_one_edited_image_per_face(side_by_side, landmarks_model_path):
    group = align_faces(side_by_side, output_size=SIZE, predictor_path=landmarks_model_path)
    with pytest.raises(AlignmentError, match="2 aligned faces but 1 edited images"):
        paste_back_faces(side_by_side, group.faces, [Image.new("RGB", (SIZE, SIZE))])
