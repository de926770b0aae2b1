"""`align_face` against the FFHQ recipe as PTI and e4e run it, written out here: dlib's detector with one
up-sampling step on the whole photo, the 68-point predictor in its box, the recipe's quad. On the test photos and
rotated / scaled / small-face variants; photos above RECIPE_MAX_PIXELS against the recipe run on their downscaled
copy."""
from __future__ import annotations

import dlib
import numpy as np
import pytest
from PIL import Image

from alignment import AlignmentError, align_face, render_aligned
from alignment.align import MIN_FACE_SCORE
from alignment.detection import RECIPE_MAX_PIXELS
from conftest import FACES_DIR

SIZE = 256


def recipe_faces(pixels: np.ndarray, predictor_path) -> list[tuple[dlib.rectangle, float, np.ndarray]]:
    """The recipe's detections (box, score, 68 landmarks), most confident first."""
    rectangles, scores, _ = dlib.get_frontal_face_detector().run(pixels, 1, 0.0)
    predictor = dlib.shape_predictor(str(predictor_path))
    faces = []
    for rectangle, score in zip(rectangles, scores):
        shape = predictor(pixels, rectangle)
        faces.append((rectangle, score, np.array([(p.x, p.y) for p in shape.parts()], dtype=float)))
    return sorted(faces, key=lambda face: face[1], reverse=True)


def recipe_quad(lm: np.ndarray) -> np.ndarray:
    """The FFHQ dataset tool's crop quad, as `recreate_aligned_images` computes it."""
    eye_left, eye_right = lm[36:42].mean(axis=0), lm[42:48].mean(axis=0)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (lm[48] + lm[54]) * 0.5
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def psnr(a: Image.Image, b: Image.Image) -> float:
    """Peak signal-to-noise ratio of two 8-bit images in dB."""
    mse = np.mean((np.asarray(a, float) - np.asarray(b, float)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def small_face(image: Image.Image) -> Image.Image:
    """The photo at half size, placed off-centre in a large grey canvas."""
    face = image.resize((image.width // 2, image.height // 2), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (1600, 1300), (128, 128, 128))
    canvas.paste(face, (1013, 587))
    return canvas


def scaled(image: Image.Image, factor: float) -> Image.Image:
    """The photo resized by `factor`."""
    return image.resize((round(image.width * factor), round(image.height * factor)), Image.Resampling.LANCZOS)


def rotated(image: Image.Image, degrees: float) -> Image.Image:
    """The photo rotated counter-clockwise, canvas grown to fit, corners grey."""
    return image.rotate(degrees, Image.Resampling.BICUBIC, expand=True, fillcolor=(128, 128, 128))


VARIANTS = {
    "original": lambda image: image,
    "rotated+25": lambda image: rotated(image, 25),
    "rotated-25": lambda image: rotated(image, -25),
    "scaled-x3": lambda image: scaled(image, 3.0),
    "scaled-x0.6": lambda image: scaled(image, 0.6),
    "small-face": small_face,
}


def open_variant(name: str, variant: str) -> Image.Image:
    """A test photo turned into one of VARIANTS, RGB."""
    with Image.open(FACES_DIR / name) as image:
        return VARIANTS[variant](image.convert("RGB"))


def assert_recipe_alignment(face, photo: Image.Image, landmarks: np.ndarray) -> None:
    """The chosen face's landmarks and quad within 1 px of the recipe's, its aligned image >= 35 dB from the
    recipe's crop of the photo."""
    quad = recipe_quad(landmarks)
    distance = np.hypot(*(face.landmarks - landmarks).T).max()
    quad_distance = np.hypot(*(face.quad - quad).T).max()
    quality = psnr(face.image, render_aligned(photo, quad, SIZE))
    assert distance <= 1.0 and quad_distance <= 1.0 and quality >= 35.0, (distance, quad_distance, quality)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("name", ["astronaut.png", "grace_hopper.jpg"])
def test_landmarks_and_crop_are_the_recipes(landmarks_model_path, name, variant):
    photo = open_variant(name, variant)
    assert photo.width * photo.height <= RECIPE_MAX_PIXELS
    expected = recipe_faces(np.asarray(photo), landmarks_model_path)
    face = align_face(photo, output_size=SIZE, predictor_path=landmarks_model_path)

    # Every detection of the recipe, and no other, with its box and score: the confident ones offered as faces.
    found = [(f.left, f.top, f.right - 1, f.bottom - 1, f.score) for f in face.faces + face.weak_faces]
    assert found == [(r.left(), r.top(), r.right(), r.bottom(), s) for r, s, _ in expected]
    assert face.faces[0].score == expected[0][1] and face.face_index == 0
    assert all(f.score >= MIN_FACE_SCORE for f in face.faces[1:])
    assert all(f.score < MIN_FACE_SCORE for f in face.weak_faces)
    assert_recipe_alignment(face, photo, expected[0][2])


def recipe_on_copy(photo: Image.Image, max_pixels: int, predictor_path) -> np.ndarray:
    """The recipe's landmarks of the most confident face on the photo's copy downscaled (bilinear, after a box
    reduction) to at most `max_pixels`, mapped back to the photo's pixels (pixel centres kept)."""
    factor = (max_pixels / (photo.width * photo.height)) ** 0.5
    copy_size = (int(photo.width * factor), int(photo.height * factor))
    copy = photo.resize(copy_size, Image.Resampling.BILINEAR, reducing_gap=1.0)
    _, _, copy_landmarks = recipe_faces(np.asarray(copy), predictor_path)[0]
    return (copy_landmarks + 0.5) * (np.array(photo.size) / copy_size) - 0.5


@pytest.mark.parametrize("name", ["astronaut.png", "grace_hopper.jpg"])
def test_above_max_pixels_the_recipe_runs_on_a_downscaled_copy(landmarks_model_path, name):
    photo = open_variant(name, "original")
    face = align_face(photo, output_size=SIZE, predictor_path=landmarks_model_path, max_pixels=200_000)
    assert_recipe_alignment(face, photo, recipe_on_copy(photo, 200_000, landmarks_model_path))


def test_by_default_photos_above_recipe_max_pixels_are_downscaled(landmarks_model_path):
    photo = scaled(open_variant("astronaut.png", "original"), 3.5)
    assert photo.width * photo.height > RECIPE_MAX_PIXELS
    face = align_face(photo, output_size=SIZE, predictor_path=landmarks_model_path)
    assert_recipe_alignment(face, photo, recipe_on_copy(photo, RECIPE_MAX_PIXELS, landmarks_model_path))


@pytest.mark.parametrize("name", ["astronaut.png", "grace_hopper.jpg"])
def test_max_pixels_none_is_the_recipe_on_the_whole_photo(landmarks_model_path, name):
    photo = open_variant(name, "scaled-x0.6")
    expected = recipe_faces(np.asarray(photo), landmarks_model_path)[0][2]
    face = align_face(photo, output_size=SIZE, predictor_path=landmarks_model_path, max_pixels=None)
    assert_recipe_alignment(face, photo, expected)
    # The same with a limit below the photo's size moves the landmarks: the copy is a different image.
    smaller = align_face(photo, output_size=SIZE, predictor_path=landmarks_model_path, max_pixels=50_000)
    assert not np.array_equal(smaller.landmarks, face.landmarks)


@pytest.mark.parametrize("bad", [0, -5, 2.5, True, "big"])
def test_bad_max_pixels(landmarks_model_path, bad):
    with pytest.raises(AlignmentError, match="max_pixels must be a positive integer or None"):
        align_face(FACES_DIR / "astronaut.png", output_size=SIZE, predictor_path=landmarks_model_path, max_pixels=bad)


def test_the_mission_patch_is_a_weak_detection_not_a_face(landmarks_model_path):
    # With the recipe's up-sampling dlib fires weakly on the round patch on the astronaut's suit.
    face = align_face(FACES_DIR / "astronaut.png", output_size=SIZE, predictor_path=landmarks_model_path)
    assert len(face.faces) == 1 and len(face.weak_faces) == 1
    patch = face.weak_faces[0]
    assert patch.score < MIN_FACE_SCORE <= face.score
    assert (patch.top + patch.bottom) / 2 > 0.6 * face.original_size[1]  # on the suit, below the face


def test_a_lone_weak_face_is_still_found(landmarks_model_path):
    # At 0.3x the astronaut's face is 37 px and scores below MIN_FACE_SCORE; being the best detection, it is offered.
    photo = scaled(open_variant("astronaut.png", "original"), 0.3)
    face = align_face(photo, output_size=SIZE, predictor_path=landmarks_model_path)
    assert face.score < MIN_FACE_SCORE and len(face.faces) == 1
