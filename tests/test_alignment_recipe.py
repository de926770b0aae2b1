"""`align_face` against the FFHQ recipe as PTI and e4e run it: dlib's detector with one up-sampling step on the whole
photo, the 68-point predictor in its box, the recipe's quad; on the test photos and rotated / scaled / small-face
variants."""
from __future__ import annotations

import dlib
import numpy as np
import pytest
from PIL import Image

from alignment import align_face, render_aligned
from conftest import FACES_DIR

SIZE = 256


def recipe_faces(photo: Image.Image, predictor_path) -> list[tuple[dlib.rectangle, float, np.ndarray]]:
    """The recipe's detections (box, score, 68 landmarks), most confident first."""
    pixels = np.asarray(photo)
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


VARIANTS = {
    "original": lambda image: image,
    "rotated+25": lambda image: image.rotate(25, Image.Resampling.BICUBIC, expand=True, fillcolor=(128, 128, 128)),
    "rotated-25": lambda image: image.rotate(-25, Image.Resampling.BICUBIC, expand=True, fillcolor=(128, 128, 128)),
    "scaled-x3": lambda image: image.resize((image.width * 3, image.height * 3), Image.Resampling.LANCZOS),
    "scaled-x0.6": lambda image: image.resize((image.width * 3 // 5, image.height * 3 // 5), Image.Resampling.LANCZOS),
    "small-face": small_face,
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("name", ["astronaut.png", "grace_hopper.jpg"])
def test_landmarks_and_crop_are_the_recipes(landmarks_model_path, name, variant):
    with Image.open(FACES_DIR / name) as image:
        photo = VARIANTS[variant](image.convert("RGB"))
    expected = recipe_faces(photo, landmarks_model_path)
    face = align_face(photo, output_size=SIZE, predictor_path=landmarks_model_path)

    # Every face the recipe finds, and no other, with its box.
    boxes = sorted((f.left, f.top, f.right - 1, f.bottom - 1) for f in face.faces)
    assert boxes == sorted((r.left(), r.top(), r.right(), r.bottom()) for r, _, _ in expected)
    # The chosen (most confident) face: landmarks, quad and aligned image.
    _, _, landmarks = expected[0]
    quad = recipe_quad(landmarks)
    distance = np.hypot(*(face.landmarks - landmarks).T).max()
    quad_distance = np.hypot(*(face.quad - quad).T).max()
    quality = psnr(face.image, render_aligned(photo, quad, SIZE))
    assert distance <= 1.0 and quad_distance <= 1.0 and quality >= 35.0, (distance, quad_distance, quality)
