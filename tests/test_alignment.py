"""FFHQ alignment of real photos with real dlib and the real 68-point model: detection, geometry, choice, errors."""
from __future__ import annotations

import dataclasses
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image
from scipy import ndimage

import alignment
from alignment import (
    AlignedFace,
    AlignmentError,
    FaceIndexError,
    LandmarkModelError,
    NoFaceError,
    align_face,
    detect_faces,
    ffhq_quad,
    landmark_predictor,
    render_aligned,
)
from conftest import FACES_DIR

SIZE = 1024
# Where FFHQ puts the eye centres, in pixels of a SIZE image: the quad's x axis is 4x the eye distance wide (for
# faces whose eye distance sets its size, as in both photos) and centred between the eyes, so the eyes land at 3/8
# and 5/8 of the width; their height depends on the face's proportions (eye-to-mouth distance), a little above 1/2.
CANONICAL_EYE_X = (0.375 * SIZE - 0.5, 0.625 * SIZE - 0.5)
CANONICAL_EYE_Y = (0.44 * SIZE, 0.50 * SIZE)
# How far (pixels at SIZE) the eye centres may move between variants of one photo. dlib's landmarks are integers
# and move a little when the pixels are resampled; on Grace Hopper's glasses they move more (measured up to 11 px).
EYE_TOLERANCE = {"astronaut.png": 4.0, "grace_hopper.jpg": 12.0}


def eye_tolerance(name: str, face: AlignedFace) -> float:
    """The photo's tolerance, and at least half a source pixel (integer landmarks) when the face is tiny."""
    source_pixel = face.output_size / np.hypot(*(face.quad[3] - face.quad[0]))
    return max(EYE_TOLERANCE[name], 0.5 * source_pixel)


def open_rgb(name: str) -> Image.Image:
    """A fixture photo as RGB."""
    with Image.open(FACES_DIR / name) as image:
        return image.convert("RGB")


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    """`image` saved in `fmt` to bytes."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def eye_centres(points: np.ndarray) -> np.ndarray:
    """(2, 2): centres of the left (36-41) and right (42-47) eye landmarks."""
    return np.stack([points[36:42].mean(axis=0), points[42:48].mean(axis=0)])


def aligned_eyes(face: AlignedFace) -> np.ndarray:
    """The eye centres of the landmarks, mapped into the aligned image."""
    return eye_centres(face.to_aligned(face.landmarks))


def rotated(image: Image.Image, degrees: float) -> Image.Image:
    """The photo rotated counter-clockwise, canvas grown to fit, corners grey."""
    return image.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(128, 128, 128))


def scaled(image: Image.Image, factor: float) -> Image.Image:
    """The photo resized by `factor`."""
    size = (round(image.width * factor), round(image.height * factor))
    return image.resize(size, Image.Resampling.LANCZOS)


def exif_rotated_jpeg(image: Image.Image) -> bytes:
    """A JPEG whose pixels are stored sideways, with EXIF Orientation 6 saying how to turn them upright."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(image.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95, exif=exif.tobytes())


GEOMETRIC_VARIANTS = {
    "rotated+25": lambda image: rotated(image, 25),
    "rotated-25": lambda image: rotated(image, -25),
    "scaled-x3": lambda image: scaled(image, 3.0),
    "scaled-x0.3": lambda image: scaled(image, 0.3),
    "exif-rotated-jpeg": exif_rotated_jpeg,
}
INPUT_VARIANTS = {
    "rgba-array": lambda image: np.dstack([np.asarray(image), np.full(image.size[::-1], 255, np.uint8)]),
    "grayscale": lambda image: image.convert("L"),
    "16-bit": lambda image: Image.fromarray(np.asarray(image.convert("L")).astype(np.uint16) * 257),
    "palette": lambda image: image.quantize(256, method=Image.Quantize.FASTOCTREE),
    "cmyk-jpeg": lambda image: encode(image.convert("CMYK"), "JPEG", quality=95),
    "webp": lambda image: encode(image, "WEBP", quality=90),
    "bmp": lambda image: encode(image, "BMP"),
    "tiff": lambda image: encode(image, "TIFF"),
    "gif": lambda image: encode(image.quantize(256, method=Image.Quantize.FASTOCTREE), "GIF"),
}


@pytest.fixture(scope="module")
def base_faces(landmarks_model_path) -> dict[str, AlignedFace]:
    """Both photos aligned at SIZE."""
    return {
        name: align_face(FACES_DIR / name, output_size=SIZE, predictor_path=landmarks_model_path)
        for name in EYE_TOLERANCE
    }


def assert_canonical_eyes(eyes: np.ndarray, reference: np.ndarray, tolerance: float) -> None:
    """Eyes where FFHQ puts them, and within `tolerance` pixels of the reference photo's aligned eyes."""
    assert np.abs(eyes[:, 0] - CANONICAL_EYE_X).max() < tolerance, eyes
    assert (CANONICAL_EYE_Y[0] < eyes[:, 1]).all() and (eyes[:, 1] < CANONICAL_EYE_Y[1]).all(), eyes
    assert abs(eyes[0, 1] - eyes[1, 1]) < tolerance, f"eyes not level: {eyes}"
    assert np.abs(eyes - reference).max() < tolerance, f"{eyes} vs {reference}"


def test_aligned_face_result(base_faces):
    face = base_faces["astronaut.png"]
    assert isinstance(face, AlignedFace)
    assert face.image.mode == "RGB" and face.image.size == (SIZE, SIZE) and face.output_size == SIZE
    assert face.quad.shape == (4, 2) and face.landmarks.shape == (68, 2)
    assert face.original_size == (512, 512)
    assert face.face_index == 0 and face.box == face.faces[0] and face.score == face.box.score
    assert [f.score for f in face.faces] == sorted((f.score for f in face.faces), reverse=True)
    # The box is in original coordinates and holds the face's inner landmarks (brows, eyes, nose, mouth).
    inner = face.landmarks[17:]
    assert (inner[:, 0] > face.box.left).all() and (inner[:, 0] < face.box.right).all()
    assert (inner[:, 1] > face.box.top - 0.1 * face.box.height).all() and (inner[:, 1] < face.box.bottom).all()
    with pytest.raises(dataclasses.FrozenInstanceError):
        face.face_index = 1
    with pytest.raises(ValueError):
        face.quad[0, 0] = 0.0


@pytest.mark.parametrize("name", sorted(EYE_TOLERANCE))
def test_base_photos_land_on_canonical_eyes(base_faces, name):
    eyes = aligned_eyes(base_faces[name])
    assert_canonical_eyes(eyes, eyes, EYE_TOLERANCE[name])


@pytest.mark.parametrize("variant", sorted(GEOMETRIC_VARIANTS))
@pytest.mark.parametrize("name", sorted(EYE_TOLERANCE))
def test_rotated_and_scaled_photos_align_the_same(base_faces, landmarks_model_path, name, variant):
    photo = GEOMETRIC_VARIANTS[variant](open_rgb(name))
    face = align_face(photo, output_size=SIZE, predictor_path=landmarks_model_path)
    assert_canonical_eyes(aligned_eyes(face), aligned_eyes(base_faces[name]), eye_tolerance(name, face))


@pytest.mark.parametrize("variant", sorted(INPUT_VARIANTS))
def test_every_input_kind_aligns_the_same(base_faces, landmarks_model_path, variant):
    name = "astronaut.png"
    face = align_face(INPUT_VARIANTS[variant](open_rgb(name)), output_size=SIZE, predictor_path=landmarks_model_path)
    assert face.original_size == (512, 512)
    assert_canonical_eyes(aligned_eyes(face), aligned_eyes(base_faces[name]), EYE_TOLERANCE[name])


@pytest.mark.parametrize("variant", ["original", "rotated+25"])
def test_aligned_pixels_agree_with_the_quad(landmarks_model_path, variant):
    # Landmarks detected again on the aligned output land where the quad transform maps the input's landmarks.
    photo = open_rgb("astronaut.png")
    if variant != "original":
        photo = GEOMETRIC_VARIANTS[variant](photo)
    face = align_face(photo, output_size=512, predictor_path=landmarks_model_path)
    again = align_face(face.image, output_size=512, predictor_path=landmarks_model_path)
    assert np.abs(eye_centres(again.landmarks) - aligned_eyes(face)).max() < 2.0
    assert np.abs(again.landmarks[27:48] - face.to_aligned(face.landmarks)[27:48]).mean() < 2.0  # nose, eyes


def test_two_faces_default_and_chosen(landmarks_model_path):
    left, right = scaled(open_rgb("astronaut.png"), 1.5), open_rgb("grace_hopper.jpg")
    canvas = Image.new("RGB", (left.width + right.width, max(left.height, right.height)), (128, 128, 128))
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width, 0))
    faces = detect_faces(canvas)
    assert len(faces) == 2 and faces[0].score > faces[1].score
    default = align_face(canvas, output_size=256, predictor_path=landmarks_model_path)
    other = align_face(canvas, face_index=1, output_size=256, predictor_path=landmarks_model_path)
    assert default.box == faces[0] and other.box == faces[1]
    centre = lambda box: (box.left + box.right) / 2  # noqa: E731
    assert sorted([centre(default.box) > left.width, centre(other.box) > left.width]) == [False, True]  # one each
    assert default.score > other.score and default.faces == other.faces and other.face_index == 1
    difference = np.abs(np.asarray(default.image, float) - np.asarray(other.image, float)).mean()
    assert difference > 20

    for bad in (2, -1):
        with pytest.raises(FaceIndexError, match=r"out of range: 2 face\(s\) found.*0\.\.1"):
            align_face(canvas, face_index=bad, output_size=256, predictor_path=landmarks_model_path)
    with pytest.raises(FaceIndexError, match="integer"):
        align_face(canvas, face_index="1", output_size=256, predictor_path=landmarks_model_path)


@pytest.mark.parametrize("make", [skimage.data.camera, skimage.data.chelsea], ids=["camera", "chelsea-cat"])
def test_no_face_is_a_clear_error(landmarks_model_path, make):
    with pytest.raises(NoFaceError, match="no face was found.*frontal, well-lit photo"):
        align_face(make(), predictor_path=landmarks_model_path)


@pytest.mark.parametrize("size", [0, -4, 2.5, True])
def test_bad_output_size(landmarks_model_path, size):
    with pytest.raises(AlignmentError, match="output_size"):
        align_face(FACES_DIR / "astronaut.png", output_size=size, predictor_path=landmarks_model_path)


def test_small_output_size(landmarks_model_path):
    face = align_face(FACES_DIR / "grace_hopper.jpg", output_size=64, predictor_path=landmarks_model_path)
    assert face.image.size == (64, 64)
    eyes = aligned_eyes(face)
    assert np.abs(eyes[:, 0] - (0.375 * 64 - 0.5, 0.625 * 64 - 0.5)).max() < 1.0


def test_ffhq_quad_of_an_upright_face():
    # Eyes at (100, 200) and (200, 200), mouth corners at (120, 290) and (180, 290): eye-to-eye (100, 0),
    # eye-to-mouth (0, 90). By the recipe, x = (100 + 90, 0) scaled to max(2 * 100, 1.8 * 90) = 200 -> (200, 0),
    # y = (0, 200), centre = (150, 200) + 0.1 * (0, 90) = (150, 209).
    landmarks = np.zeros((68, 2))
    landmarks[36:42] = (100, 200)
    landmarks[42:48] = (200, 200)
    landmarks[48] = (120, 290)
    landmarks[54] = (180, 290)
    expected = np.array([[-50, 9], [-50, 409], [350, 409], [350, 9]], dtype=float)
    assert np.allclose(ffhq_quad(landmarks), expected)
    # Rolled by 30 degrees, scaled by 1.5 and moved: the quad follows exactly (the crop comes out upright).
    angle = np.radians(30)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = landmarks @ (1.5 * rotation).T + (40, -7)
    assert np.allclose(ffhq_quad(moved), expected @ (1.5 * rotation).T + (40, -7))
    # A long face (eye-to-mouth sets the size): max(2 * 100, 1.8 * 150) = 270.
    landmarks[48], landmarks[54] = (120, 350), (180, 350)
    assert np.isclose(np.hypot(*(ffhq_quad(landmarks)[3] - ffhq_quad(landmarks)[0])), 2 * 270)
    with pytest.raises(AlignmentError, match="68"):
        ffhq_quad(np.zeros((5, 2)))


def blob_photo(size: tuple[int, int], point: np.ndarray, sigma: float) -> Image.Image:
    """A grey photo with one red Gaussian blob centred on `point` (pixel-centre coordinates)."""
    y, x = np.mgrid[: size[1], : size[0]]
    blob = np.exp(-((x - point[0]) ** 2 + (y - point[1]) ** 2) / (2 * sigma**2))
    pixels = np.full((size[1], size[0], 3), 60, np.uint8)
    pixels[:, :, 0] = np.maximum(60, np.rint(blob * 255)).astype(np.uint8)
    return Image.fromarray(pixels)


def square_quad(centre, x_axis) -> np.ndarray:
    """An FFHQ-style quad with the given centre and half x axis."""
    centre, x_axis = np.asarray(centre, float), np.asarray(x_axis, float)
    y_axis = np.flipud(x_axis) * [-1, 1]
    return np.stack([centre - x_axis - y_axis, centre - x_axis + y_axis, centre + x_axis + y_axis,
                     centre + x_axis - y_axis])


@pytest.mark.parametrize(
    "photo_size, centre, x_axis, output_size",
    [
        ((400, 400), (200, 190), (80, 30), 512),  # upsampled
        ((700, 700), (350, 340), (250, -60), 512),  # about 1:1, rotated the other way
        ((900, 900), (450, 440), (350, 100), 256),  # supersampled
        ((1500, 1500), (750, 740), (600, 150), 256),  # shrunk first
        ((300, 260), (150, 110), (120, 40), 256),  # the quad leaves the photo: reflect padding
    ],
    ids=["upsampled", "one-to-one", "supersampled", "shrunk", "padded"],
)
def test_render_puts_points_where_the_mapping_says(photo_size, centre, x_axis, output_size):
    quad = square_quad(centre, x_axis)
    rng = np.random.default_rng(3)
    for _ in range(3):
        s, t = rng.uniform(0.3, 0.7, size=2)
        point = quad[0] + (quad[3] - quad[0]) * s + (quad[1] - quad[0]) * t
        sigma = np.hypot(*x_axis) / 40
        rendered = np.asarray(render_aligned(blob_photo(photo_size, point, sigma), quad, output_size), float)
        expected = alignment.original_to_aligned(point[None], quad, output_size)[0]
        weights = np.clip(rendered[:, :, 0] - 60, 0, None)
        weights[weights < 0.3 * weights.max()] = 0
        found = np.array(ndimage.center_of_mass(weights))[::-1]
        assert np.hypot(*(found - expected)) < 0.25, (found, expected)


def ffhq_reference_render(image: Image.Image, quad: np.ndarray, output_size: int) -> Image.Image:
    """FFHQ's crop, reflect padding and transform written out plainly at full resolution (float32, scipy blur),
    for small photos where nothing is shrunk or supersampled."""
    quad = np.asarray(quad, dtype=np.float64) + 0.5  # PIL's continuous coordinates
    qsize = np.hypot(*(quad[3] - quad[0]))
    border = max(int(np.rint(qsize * 0.1)), 3)
    low, high = np.floor(quad.min(axis=0)).astype(int), np.ceil(quad.max(axis=0)).astype(int)
    crop = (max(low[0] - border, 0), max(low[1] - border, 0),
            min(high[0] + border, image.width), min(high[1] + border, image.height))
    photo = np.asarray(image.crop(crop), dtype=np.float32)
    quad = quad - crop[:2]
    low, high = np.floor(quad.min(axis=0)).astype(int), np.ceil(quad.max(axis=0)).astype(int)
    pad = np.array([max(border - low[0], 0), max(border - low[1], 0),
                    max(high[0] - photo.shape[1] + border, 0), max(high[1] - photo.shape[0] + border, 0)])
    assert pad.max() > border - 4, "the quad must leave the photo"
    pad = np.maximum(pad, int(np.rint(qsize * 0.3)))
    canvas = np.pad(photo, ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), mode="reflect")
    height, width = canvas.shape[:2]
    y, x = np.ogrid[:height, :width]
    edge = np.maximum(1.0 - np.minimum(x / pad[0], (width - 1 - x) / pad[2]),
                      1.0 - np.minimum(y / pad[1], (height - 1 - y) / pad[3]))[:, :, None]
    blur = qsize * 0.02
    canvas += (ndimage.gaussian_filter(canvas, [blur, blur, 0]) - canvas) * np.clip(edge * 3.0 + 1.0, 0.0, 1.0)
    canvas += (np.median(canvas, axis=(0, 1)) - canvas) * np.clip(edge, 0.0, 1.0)
    padded = Image.fromarray(np.clip(np.rint(canvas), 0, 255).astype(np.uint8))
    corners = (quad + pad[:2]).flatten().tolist()
    return padded.transform((output_size, output_size), Image.Transform.QUAD, corners, Image.Resampling.BILINEAR)


@pytest.mark.parametrize("centre, x_axis", [((60, 60), (70, 20)), ((470, 300), (-15, 75)), ((256, 480), (60, 0))])
def test_reflect_padding_matches_the_ffhq_recipe(centre, x_axis):
    # The padding is computed as two smooth layers at reduced resolution; here (a small quad) it must match the
    # recipe computed plainly, up to the blur's approximation and rounding.
    photo = open_rgb("astronaut.png")
    quad = square_quad(centre, x_axis)
    rendered = np.asarray(render_aligned(photo, quad, 512), dtype=float)
    reference = np.asarray(ffhq_reference_render(photo, quad, 512), dtype=float)
    difference = np.abs(rendered - reference)
    assert difference.mean() < 0.5 and np.percentile(difference, 99) < 3.0  # without the median fade: 6 and 60+


def test_coordinate_mappings_are_inverse(base_faces):
    face = base_faces["grace_hopper.jpg"]
    corners = np.array([[-0.5, -0.5], [-0.5, SIZE - 0.5], [SIZE - 0.5, SIZE - 0.5], [SIZE - 0.5, -0.5]])
    assert np.allclose(face.to_original(corners), face.quad)
    points = np.random.default_rng(0).uniform(0, 500, size=(10, 2))
    assert np.allclose(face.to_original(face.to_aligned(points)), points)


def test_predictor_is_cached_and_checked(tmp_path, landmarks_model_path):
    assert landmark_predictor(landmarks_model_path) is landmark_predictor(str(landmarks_model_path))
    wrong = tmp_path / "shape_predictor_68_face_landmarks.dat"
    wrong.write_bytes(b"not the model")
    with pytest.raises(LandmarkModelError, match="sha256"):
        landmark_predictor(wrong)
    with pytest.raises(LandmarkModelError, match="cannot read"):
        landmark_predictor(tmp_path / "missing.dat")
    with pytest.raises(LandmarkModelError, match="sha256"):
        align_face(FACES_DIR / "astronaut.png", predictor_path=wrong)


def test_default_predictor_comes_from_the_registry(monkeypatch, landmarks_model_path):
    import pti.weights

    asked = []

    def fake_resolve(key, **kwargs):
        asked.append(key)
        return landmarks_model_path

    monkeypatch.setattr(pti.weights, "resolve", fake_resolve)
    face = align_face(FACES_DIR / "astronaut.png", output_size=128)
    assert asked == ["dlib-landmarks-68"] and face.image.size == (128, 128)

    def unavailable(key, **kwargs):
        raise pti.weights.WeightsError("the Hub cannot be reached")

    monkeypatch.setattr(pti.weights, "resolve", unavailable)
    with pytest.raises(LandmarkModelError, match="not available: the Hub cannot be reached"):
        align_face(FACES_DIR / "astronaut.png")


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, crop, size",
    [
        ("astronaut.png", None, (4900, 4900)),  # the whole portrait: the quad lies inside the photo
        ("grace_hopper.jpg", (130, 110, 410, 400), (4800, 4972)),  # a close-up: the quad leaves it (padding)
    ],
)
def test_a_24_megapixel_photo(base_faces, landmarks_model_path, name, crop, size, monkeypatch):
    photo = open_rgb(name)
    photo = (photo.crop(crop) if crop else photo).resize(size, Image.Resampling.BICUBIC)
    # What the alignment makes of the photo, instead of a CPU-time bound: no resampled, transformed, blurred or
    # padded image as large as the whole photo (a full-resolution path), counted where PIL and numpy make them.
    made = []
    for method in ("resize", "transform", "filter"):
        original = getattr(Image.Image, method)

        def spy(self, *args, _original=original, _method=method, **kwargs):
            result = _original(self, *args, **kwargs)
            made.append((_method, result.size[0] * result.size[1]))
            return result

        monkeypatch.setattr(Image.Image, method, spy)
    numpy_pad = np.pad

    def pad_spy(array, *args, **kwargs):
        result = numpy_pad(array, *args, **kwargs)
        made.append(("pad", result.shape[0] * result.shape[1]))
        return result

    monkeypatch.setattr(np, "pad", pad_spy)
    face = align_face(photo, output_size=SIZE, predictor_path=landmarks_model_path)
    assert face.original_size == size
    assert_canonical_eyes(aligned_eyes(face), aligned_eyes(base_faces[name]), EYE_TOLERANCE[name])
    assert made and max(pixels for _, pixels in made) < 0.25 * size[0] * size[1], made


def test_detection_from_two_threads_at_once():
    """Two app sessions detect faces at the same time: dlib's detector must not run in both at once (it corrupted
    the heap and crashed the process). In a child process, so that a crash fails this test, not the test run."""
    script = f"""
import sys, threading
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
from PIL import Image
from alignment.detection import detect_faces
photos = [Image.open(p).convert("RGB") for p in ({str(FACES_DIR / 'astronaut.png')!r}, {str(FACES_DIR / 'grace_hopper.jpg')!r})]
expected = [detect_faces(photo) for photo in photos]
failures = []
def detect(photo, faces):
    for _ in range(20):
        if detect_faces(photo) != faces:
            failures.append("different faces")
threads = [threading.Thread(target=detect, args=pair) for pair in zip(photos, expected)]
[thread.start() for thread in threads]
[thread.join() for thread in threads]
print(len(failures))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "0"
