"""alignment.load_image: every upload a person may make becomes an upright RGB image, or a clear ImageInputError."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from alignment import DEFAULT_MAX_PIXELS, AlignmentError, ImageInputError, load_image
from conftest import FACES_DIR


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    """The astronaut photo, 512x512 RGB."""
    with Image.open(FACES_DIR / "astronaut.png") as image:
        return image.convert("RGB")


@pytest.fixture(scope="module")
def hopper() -> Image.Image:
    """The Grace Hopper photo, 512x600 (portrait, so a wrong rotation changes the size)."""
    with Image.open(FACES_DIR / "grace_hopper.jpg") as image:
        return image.convert("RGB")


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    """`image` saved in `fmt` to bytes."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def palette(image: Image.Image, colours: int = 256) -> Image.Image:
    """The RGB image quantised to a palette (fast octree; Pillow's default median cut takes seconds)."""
    return image.quantize(colours, method=Image.Quantize.FASTOCTREE)


def pixels(image: Image.Image) -> np.ndarray:
    """The image's pixels as a float array."""
    return np.asarray(image, dtype=np.float64)


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares `width` x `height` RGB pixels but holds almost no pixel data (decoding it would fail)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))


@pytest.mark.parametrize("fmt, options", [("PNG", {}), ("BMP", {}), ("TIFF", {}), ("WEBP", {"lossless": True})])
def test_lossless_formats_load_exactly(astronaut, fmt, options):
    loaded = load_image(encode(astronaut, fmt, **options))
    assert loaded.mode == "RGB" and loaded.size == (512, 512)
    assert np.array_equal(np.asarray(loaded), np.asarray(astronaut))


@pytest.mark.parametrize("fmt, tolerance", [("JPEG", 4.0), ("WEBP", 4.0), ("GIF", 6.0)])
def test_lossy_and_palette_formats_load_close(astronaut, fmt, tolerance):
    loaded = load_image(encode(palette(astronaut) if fmt == "GIF" else astronaut, fmt))
    assert loaded.mode == "RGB" and loaded.size == (512, 512)
    assert np.abs(pixels(loaded) - pixels(astronaut)).mean() < tolerance


def test_path_str_and_file_inputs(tmp_path, hopper):
    path = tmp_path / "hopper.png"
    hopper.save(path)
    for source in (path, str(path)):
        loaded = load_image(source)
        assert loaded.mode == "RGB" and np.array_equal(np.asarray(loaded), np.asarray(hopper))


def test_numpy_and_pil_inputs(astronaut):
    array = np.asarray(astronaut)
    assert np.array_equal(np.asarray(load_image(array)), array)
    assert np.array_equal(np.asarray(load_image(array[:, :, 0])), np.repeat(array[:, :, :1], 3, axis=2))
    assert load_image(astronaut).size == (512, 512)
    assert load_image(bytearray(encode(astronaut, "PNG"))).size == (512, 512)


def test_gif_first_frame(astronaut):
    frames = [palette(astronaut), palette(Image.fromarray(255 - np.asarray(astronaut)))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    with Image.open(io.BytesIO(data)) as gif:
        assert gif.n_frames == 2
    loaded = load_image(data)
    assert np.abs(pixels(loaded) - pixels(astronaut)).mean() < 6.0  # the first frame, not the inverted second


def test_exif_orientation_is_applied(hopper):
    # Orientation 6: the stored pixels must be rotated 90 degrees clockwise to be seen upright.
    stored = hopper.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(stored, "JPEG", quality=95, exif=exif.tobytes())
    with Image.open(io.BytesIO(data)) as raw:
        assert raw.size == (600, 512)
    loaded = load_image(data)
    assert loaded.size == (512, 600)
    assert np.abs(pixels(loaded) - pixels(hopper)).mean() < 4.0


def test_alpha_is_composited_on_neutral_grey(astronaut):
    rgba = np.dstack([np.asarray(astronaut), np.full((512, 512), 255, np.uint8)])
    rgba[:, :200, 3] = 0
    for source in (Image.fromarray(rgba), encode(Image.fromarray(rgba), "PNG"), rgba):
        loaded = np.asarray(load_image(source))
        assert (loaded[:, :200] == 128).all()
        assert np.array_equal(loaded[:, 200:], np.asarray(astronaut)[:, 200:])


def test_palette_with_transparency_and_la(astronaut):
    indexed = palette(astronaut, 255)
    indices = np.asarray(indexed).copy()
    indices[:, :100] = 255  # the transparent index
    transparent = Image.frombytes("P", indexed.size, indices.tobytes())
    transparent.putpalette(indexed.getpalette() + [0, 0, 0] * (256 - len(indexed.getpalette()) // 3))
    data = encode(transparent, "GIF", transparency=255)
    loaded = np.asarray(load_image(data))
    assert (loaded[:, :100] == 128).all()
    assert np.abs(loaded[:, 100:].astype(float) - pixels(astronaut)[:, 100:]).mean() < 6.0
    la = load_image(astronaut.convert("LA"))
    assert la.mode == "RGB" and np.array_equal(np.asarray(la)[:, :, 0], np.asarray(astronaut.convert("L")))


def test_grayscale_and_palette_become_rgb(astronaut):
    grey = astronaut.convert("L")
    loaded = np.asarray(load_image(encode(grey, "PNG")))
    assert loaded.shape == (512, 512, 3)
    assert all(np.array_equal(loaded[:, :, c], np.asarray(grey)) for c in range(3))
    indexed = palette(astronaut)
    assert np.array_equal(np.asarray(load_image(indexed)), np.asarray(indexed.convert("RGB")))


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_sixteen_bit_grey_is_scaled_to_eight_bits(astronaut, fmt):
    grey = np.asarray(astronaut.convert("L"))
    sixteen = Image.fromarray(grey.astype(np.uint16) * 257)
    assert sixteen.mode == "I;16"
    data = encode(sixteen, fmt)
    with Image.open(io.BytesIO(data)) as raw:
        assert raw.mode.startswith("I")
    for source in (data, sixteen):
        loaded = np.asarray(load_image(source))
        assert np.array_equal(loaded[:, :, 0], grey) and np.array_equal(loaded[:, :, 2], grey)


def test_cmyk_becomes_rgb(astronaut):
    cmyk = astronaut.convert("CMYK")
    assert np.array_equal(np.asarray(load_image(encode(cmyk, "TIFF"))), np.asarray(astronaut))
    jpeg = load_image(encode(cmyk, "JPEG", quality=95))
    assert jpeg.mode == "RGB" and np.abs(pixels(jpeg) - pixels(astronaut)).mean() < 4.0


def test_errors_are_alignment_errors_and_value_errors():
    assert issubclass(ImageInputError, AlignmentError) and issubclass(AlignmentError, ValueError)


@pytest.mark.parametrize(
    "data, words",
    [
        (b"", "empty"),
        (b"Dear reader, this file holds text and no picture at all.\n" * 4, "not an image"),
        (np.random.default_rng(0).bytes(4096), "not an image"),
        (b"\x89PNG\r\n\x1a\n" + b"junk" * 64, "corrupt"),
    ],
    ids=["empty", "text", "random-bytes", "png-signature-then-junk"],
)
def test_bad_bytes_are_refused_clearly(data, words):
    with pytest.raises(ImageInputError, match=words):
        load_image(data)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_truncated_files_are_refused(astronaut, fmt):
    data = encode(astronaut, fmt)
    with pytest.raises(ImageInputError, match="truncated|corrupt"):
        load_image(data[: len(data) // 2])


def test_unsupported_format_is_refused(astronaut):
    with pytest.raises(ImageInputError, match="supported format.*JPEG, PNG"):
        load_image(encode(astronaut, "PPM"))


def test_bad_files_and_paths(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("not a picture\n")
    with pytest.raises(ImageInputError, match="empty"):
        load_image(empty)
    with pytest.raises(ImageInputError, match="not an image.*'notes.png'|'notes.png' is not an image"):
        load_image(text)
    with pytest.raises(ImageInputError, match="no such file"):
        load_image(tmp_path / "missing.jpg")
    with pytest.raises(ImageInputError, match="not a file"):
        load_image(tmp_path)


def test_bad_arrays_and_types():
    with pytest.raises(ImageInputError, match="uint8"):
        load_image(np.zeros((8, 8, 3), dtype=np.float32))
    with pytest.raises(ImageInputError, match="shape"):
        load_image(np.zeros((8, 8, 2), dtype=np.uint8))
    with pytest.raises(ImageInputError, match="no pixels"):
        load_image(np.zeros((0, 8, 3), dtype=np.uint8))
    with pytest.raises(ImageInputError, match="no image"):
        load_image(None)
    with pytest.raises(TypeError, match="expected a path"):
        load_image(12345)


def test_oversized_image_is_refused_before_decoding():
    # 9000 x 9000 = 81 MP: over our limit, under Pillow's bomb limit. The file holds no real pixel data, so had it
    # been decoded the error would say "truncated"; the size check must come first.
    assert 9000 * 9000 > DEFAULT_MAX_PIXELS
    with pytest.raises(ImageInputError, match=r"too large: 9000x9000 = 81\.0 megapixels.*limit"):
        load_image(png_header(9000, 9000))
    with pytest.raises(ImageInputError, match="truncated"):
        load_image(png_header(100, 100))  # the same kind of file, small enough to be decoded


def test_decompression_bomb_is_refused():
    with pytest.raises(ImageInputError, match="too large"):
        load_image(png_header(30000, 30000))  # 900 MP: Pillow's own guard refuses it at open


def test_max_pixels_is_configurable(astronaut):
    with pytest.raises(ImageInputError, match="too large"):
        load_image(astronaut, max_pixels=512 * 511)
    assert load_image(astronaut, max_pixels=512 * 512).size == (512, 512)
