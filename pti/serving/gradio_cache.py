"""Atomic writes into Gradio's file cache: a workaround for downloads cut by Gradio's in-place rewrites.

Gradio (checked: 4.44.1, 5.0.0, 5.49.1, 6.0.0, 6.31.0) writes an image returned to `gr.Image` / `gr.Gallery` to
`<cache>/<hash of its bytes>/image.png` with a truncate-then-write on every call, even when that file exists, while
another client may be downloading it (Starlette's `FileResponse` takes Content-Length from `stat`, then reads the file
by name): the download is cut. `save_bytes_to_cache` does the same. `install_atomic_cache_writes` replaces both by
versions that write a temporary file in the same folder and `os.replace` it into place, so a reader sees the old file
or the new one, never a partial one. See docs/upstream/gradio-save-pil-to-cache.md; remove this module once Gradio
fixes it (tests/test_gradio_cache.py tells, on an upgrade, whether the stock functions still rewrite in place).
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import gradio
from gradio import processing_utils
from gradio.profiling import traced_sync
from packaging.version import Version
from PIL import Image

LOGGER = logging.getLogger(__name__)
# Gradio versions whose stock functions were checked to rewrite in place: [first checked, first not checked).
AFFECTED_VERSIONS = (Version("4.44.1"), Version("6.32"))


@traced_sync("postprocess_save_pil_to_cache")
def save_pil_to_cache(img: Image.Image, cache_dir: str, name: str = "image", format: str = "webp") -> str:
    """Gradio's `save_pil_to_cache` (same arguments, same path), written atomically."""
    data = processing_utils.encode_pil_to_bytes(img, format)
    return _replace_into(Path(cache_dir) / processing_utils.hash_bytes(data), f"{name}.{format}", data)


@traced_sync("postprocess_save_bytes_to_cache")
def save_bytes_to_cache(data: bytes, file_name: str, cache_dir: str) -> str:
    """Gradio's `save_bytes_to_cache` (same arguments, same path), written atomically."""
    if not Path(file_name).suffix:
        file_name += processing_utils.detect_audio_format(data)
    return _replace_into(Path(cache_dir) / processing_utils.hash_bytes(data), Path(file_name).name, data)


def _replace_into(folder: Path, name: str, data: bytes) -> str:
    """Write `data` to `folder/name` through a temporary file in `folder` and `os.replace`; its resolved path.

    Written on every call, as Gradio does, rather than returning an existing file: a file left cut by a crash or by
    an earlier stock write is then healed, and the new ctime restarts `delete_cache`'s clock for a file handed out
    again. A reader that opened the old file keeps reading it (the same bytes: the folder is their hash).
    """
    folder.mkdir(parents=True, exist_ok=True)
    target = (folder / name).resolve()
    descriptor, staging = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        os.chmod(staging, 0o644)  # as a plain write would leave it (mkstemp makes it private)
        os.replace(staging, target)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    return str(target)


def install_atomic_cache_writes() -> bool:
    """Replace Gradio's `save_pil_to_cache` and `save_bytes_to_cache` by the atomic versions above, if this Gradio is
    one where they were checked to rewrite in place; True if they are installed (also when already installed).

    Gradio calls both through the module (`processing_utils.save_pil_to_cache(...)`, also from within it, e.g.
    `save_img_array_to_cache`), never by a name imported elsewhere, so replacing the module's attributes covers
    every call.
    """
    version = Version(gradio.__version__)
    first, end = AFFECTED_VERSIONS
    if not first <= version < end:
        LOGGER.info("gradio %s: atomic cache writes not installed (checked for %s to before %s)", version, first, end)
        return False
    processing_utils.save_pil_to_cache = save_pil_to_cache
    processing_utils.save_bytes_to_cache = save_bytes_to_cache
    return True
