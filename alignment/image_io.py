"""Robust image input: whatever a person uploads becomes an upright RGB PIL image, or a clear ImageInputError."""
from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path
from typing import Union

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from .errors import ImageInputError

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray]

# Largest image accepted, in pixels (64 MP covers every phone and most cameras; 3 bytes a pixel once decoded).
# Pillow's own decompression-bomb guard (Image.MAX_IMAGE_PIXELS) still refuses anything above twice its limit.
DEFAULT_MAX_PIXELS = 64_000_000
# Formats a person may upload (Pillow's JPEG opener also reads camera MPO files, JPEGs with extra preview frames).
SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
SUPPORTED_FORMAT_NAMES = "JPEG, PNG, WebP, BMP, TIFF or GIF"
# Background that transparent pixels are composited onto: a neutral mid grey.
ALPHA_BACKGROUND = (128, 128, 128)

_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, IndexError)
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


def load_image(source: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Load a path, bytes, PIL image or HxWx3 uint8 array as an upright RGB image; refuse bad input clearly."""
    if source is None:
        raise ImageInputError("no image was given")
    if isinstance(source, Image.Image):
        return _normalise(source, "the image", max_pixels)
    if isinstance(source, np.ndarray):
        return _normalise(_image_from_array(source), "the array", max_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise ImageInputError("the image data is empty (0 bytes)")
        return _open_and_normalise(io.BytesIO(data), "the image data", max_pixels)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise ImageInputError(f"no such file: {path}")
        if not path.is_file():
            raise ImageInputError(f"not a file: {path}")
        if path.stat().st_size == 0:
            raise ImageInputError(f"the file is empty (0 bytes): {path}")
        try:
            file = path.open("rb")
        except OSError as error:
            raise ImageInputError(f"cannot read {path}: {error.strerror or error}") from None
        with file:
            return _open_and_normalise(file, f"the file {path.name!r}", max_pixels)
    raise TypeError(
        f"expected a path, bytes, a PIL image or an HxWx3 uint8 array, got {type(source).__name__}"
    )


def _open_and_normalise(file, name: str, max_pixels: int) -> Image.Image:
    """Identify the format from the header, check the size, then decode; every failure is an ImageInputError."""
    try:
        image = Image.open(file, formats=SUPPORTED_FORMATS)
    except Image.DecompressionBombError as error:
        raise ImageInputError(f"{name} is far too large to decode safely ({error})") from None
    except UnidentifiedImageError:
        raise ImageInputError(
            f"{name} is not an image in a supported format ({SUPPORTED_FORMAT_NAMES})"
        ) from None
    except _DECODE_ERRORS as error:
        raise ImageInputError(f"{name} is corrupt: its header cannot be read ({error})") from None
    return _normalise(image, name, max_pixels)


def _normalise(image: Image.Image, name: str, max_pixels: int) -> Image.Image:
    """Check the pixel count before decoding, decode, apply EXIF orientation and convert to RGB."""
    width, height = image.size
    if width == 0 or height == 0:
        raise ImageInputError(f"{name} has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageInputError(
            f"{name} is too large: {width}x{height} = {width * height / 1e6:.1f} megapixels, over the limit of "
            f"{max_pixels / 1e6:.1f} megapixels; downscale it first"
        )
    try:
        image.load()
    except _DECODE_ERRORS as error:
        raise ImageInputError(f"{name} is truncated or corrupt and cannot be decoded ({error})") from None
    image = _apply_exif_orientation(image, name)
    return _to_rgb(image, name)


def _apply_exif_orientation(image: Image.Image, name: str) -> Image.Image:
    """Rotate/flip the pixels as the EXIF Orientation tag says (camera photos are often stored sideways)."""
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
        if orientation in (None, 1):
            return image
        return ImageOps.exif_transpose(image)
    except _DECODE_ERRORS as error:
        raise ImageInputError(f"{name} has corrupt EXIF metadata ({error})") from None


def _to_rgb(image: Image.Image, name: str) -> Image.Image:
    """Convert any supported mode to 8-bit RGB: palette, grey, 16-bit, CMYK; alpha composited on neutral grey."""
    if image.mode == "RGB":
        return image
    if image.mode in _SIXTEEN_BIT_MODES:
        return _sixteen_bit_to_rgb(image)
    has_alpha = image.mode in _ALPHA_MODES or (image.mode == "P" and "transparency" in image.info)
    try:
        if has_alpha:
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, ALPHA_BACKGROUND + (255,))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return image.convert("RGB")
    except ValueError:
        raise ImageInputError(f"{name} has an unsupported colour mode {image.mode!r}") from None


def _sixteen_bit_to_rgb(image: Image.Image) -> Image.Image:
    """Scale a 16-bit (or 32-bit integer) grey image to 8 bits; integer images with values <= 255 stay as they are."""
    values = np.asarray(image).astype(np.float64)
    if image.mode.startswith("I;16") or values.max(initial=0) > 255:
        values = np.clip(values, 0, 65535) / 257.0
    grey = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


def _image_from_array(array: np.ndarray) -> Image.Image:
    """Wrap an HxW, HxWx1, HxWx3 or HxWx4 uint8 array as a PIL image."""
    if array.dtype != np.uint8:
        raise ImageInputError(f"the array must have dtype uint8, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ImageInputError(f"the array must have shape HxW, HxWx3 or HxWx4, got {array.shape}")
    if array.size == 0:
        raise ImageInputError(f"the array has no pixels (shape {array.shape})")
    return Image.fromarray(np.ascontiguousarray(array))
