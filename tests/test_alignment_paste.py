"""alignment.paste_back / face_mask: the edited aligned face goes back exactly where it came from, without a seam."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps

from alignment import AlignedFace, AlignmentError, align_face, face_mask, paste_back
from alignment.paste import MASK_OPAQUE_RADIUS, MASK_RADII
from conftest import FACES_DIR


def open_rgb(name: str) -> Image.Image:
    """A fixture photo as RGB."""
    with Image.open(FACES_DIR / name) as image:
        return image.convert("RGB")


def photo_variant(name: str, variant: str) -> Image.Image:
    """The photo as is, rotated by 25 degrees, or scaled by 3."""
    photo = open_rgb(name)
    if variant == "rotated+25":
        return photo.rotate(25, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(128, 128, 128))
    if variant == "scaled-x3":
        return photo.resize((photo.width * 3, photo.height * 3), Image.Resampling.LANCZOS)
    return photo


@pytest.fixture(scope="module")
def aligned_photos(landmarks_model_path) -> dict[tuple[str, str], tuple[Image.Image, AlignedFace]]:
    """(photo, aligned face at 1024) for each photo and variant used below."""
    result = {}
    for key in [
        ("astronaut.png", "original"),
        ("grace_hopper.jpg", "original"),
        ("astronaut.png", "rotated+25"),
        ("grace_hopper.jpg", "scaled-x3"),
    ]:
        photo = photo_variant(*key)
        result[key] = (photo, align_face(photo, output_size=1024, predictor_path=landmarks_model_path))
    return result


@pytest.mark.parametrize(
    "key",
    [
        ("astronaut.png", "original"),
        ("grace_hopper.jpg", "original"),
        ("astronaut.png", "rotated+25"),
        ("grace_hopper.jpg", "scaled-x3"),
    ],
)
def test_unedited_paste_back_is_an_identity(aligned_photos, key):
    photo, face = aligned_photos[key]
    result = paste_back(photo, face, face.image)
    assert result.size == photo.size and result.mode == "RGB"
    mask = face_mask(face)
    before, after = np.asarray(photo).astype(float), np.asarray(result).astype(float)
    assert np.array_equal(after[mask == 0], before[mask == 0])  # bit-exact outside the mask's support
    difference = np.abs(after - before).mean(axis=2)
    # Inside: only the two resamplings (photo -> aligned -> photo) show, about 1% of the range.
    assert difference[mask > 0.5].mean() < 3.5
    assert (mask > 0.5).sum() > 0.5 * (face.box.width * face.box.height)


def test_edited_face_of_another_size_is_resized(aligned_photos):
    photo, face = aligned_photos[("astronaut.png", "original")]
    small = face.image.resize((256, 256), Image.Resampling.LANCZOS)
    result = np.asarray(paste_back(photo, face, small)).astype(float)
    mask = face_mask(face)
    assert np.abs(result - np.asarray(photo, float)).mean(axis=2)[mask > 0.5].mean() < 4.0


def test_edit_lands_inside_the_mask_only(aligned_photos):
    photo, face = aligned_photos[("astronaut.png", "rotated+25")]
    red = Image.new("RGB", (512, 512), (255, 0, 0))
    result = np.asarray(paste_back(photo, face, red))
    mask = face_mask(face)
    assert (result[mask == 1.0] == (255, 0, 0)).all()
    assert np.array_equal(result[mask == 0], np.asarray(photo)[mask == 0])
    feather = (mask > 0.2) & (mask < 0.8)
    expected = np.asarray(photo)[feather] * (1 - mask[feather, None]) + np.array([255, 0, 0]) * mask[feather, None]
    assert np.abs(result[feather] - expected).max() <= 1.0  # the feather blends photo and edit by the mask


def test_paste_back_geometry(aligned_photos):
    # A dot drawn at an aligned-image position comes back at that position mapped into the photo.
    photo, face = aligned_photos[("astronaut.png", "rotated+25")]
    target = np.array([560.0, 600.0])  # on the face (mask 1), aligned pixel coordinates
    y, x = np.mgrid[:1024, :1024]
    dot = np.exp(-((x - target[0]) ** 2 + (y - target[1]) ** 2) / (2 * 12.0**2))
    edited = np.zeros((1024, 1024, 3), np.uint8)
    edited[:, :, 1] = np.rint(dot * 255).astype(np.uint8)
    black = np.zeros_like(edited)
    with_dot, without = (np.asarray(paste_back(photo, face, e), dtype=float)[:, :, 1] for e in (edited, black))
    result = with_dot - without
    expected = face.to_original(target[None])[0]
    weights = np.where(result > 0.3 * result.max(), result, 0)
    ys, xs = np.nonzero(weights)
    found = np.array([(xs * weights[ys, xs]).sum(), (ys * weights[ys, xs]).sum()]) / weights[ys, xs].sum()
    assert np.hypot(*(found - expected)) < 0.3


@pytest.mark.parametrize("key", [("astronaut.png", "original"), ("grace_hopper.jpg", "scaled-x3")])
def test_mask_is_soft_and_covers_the_face(aligned_photos, key):
    photo, face = aligned_photos[key]
    mask = face_mask(face)
    assert mask.shape == (photo.height, photo.width) and mask.dtype == np.float32
    assert mask.min() == 0.0 and mask.max() == 1.0
    rows, cols = np.rint(face.landmarks[:, 1]).astype(int), np.rint(face.landmarks[:, 0]).astype(int)
    assert (mask[rows[17:], cols[17:]] == 1.0).all()  # brows, eyes, nose, mouth fully replaced
    assert (mask[rows[:17], cols[:17]] > 0.75).all()  # the jaw line mostly
    # No seam: the largest step between neighbours is the smoothstep's steepest slope (1.5 / ramp width).
    ramp_pixels = (1 - MASK_OPAQUE_RADIUS) * min(MASK_RADII) * np.hypot(*(face.quad[3] - face.quad[0]))
    steepest = max(np.abs(np.diff(mask, axis=0)).max(), np.abs(np.diff(mask, axis=1)).max())
    assert steepest <= 1.5 / ramp_pixels * 1.1 + 2 / 255  # (plus the 8-bit mask's rounding)
    assert steepest < 0.1


def test_paste_back_refuses_mismatches(aligned_photos):
    photo, face = aligned_photos[("astronaut.png", "original")]
    with pytest.raises(AlignmentError, match="400x512.*512x512"):
        paste_back(photo.crop((0, 0, 400, 512)), face, face.image)
    with pytest.raises(AlignmentError, match="square"):
        paste_back(photo, face, face.image.crop((0, 0, 1024, 900)))


def test_paste_back_accepts_paths_and_arrays(aligned_photos):
    photo, face = aligned_photos[("grace_hopper.jpg", "original")]
    inverted = ImageOps.invert(face.image)
    from_path = paste_back(FACES_DIR / "grace_hopper.jpg", face, np.asarray(inverted))
    assert np.array_equal(np.asarray(from_path), np.asarray(paste_back(photo, face, inverted)))
