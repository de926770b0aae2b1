"""Where a dataset run writes, and how: one folder per image, written under a temporary name and then renamed, so
an interrupted run leaves each image's folder complete or absent."""
from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

IMAGES_FOLDER = "images"  # OUT/images/<the image's relative path>/ holds its files
METRICS_FILENAME = "metrics.json"  # written last into an image's folder
RECONSTRUCTION_FILENAME = "reconstruction.png"  # the pivot rendered by the tuned generator (PTI)
CSV_FILENAME = "images.csv"
SUMMARY_JSON_FILENAME = "summary.json"
SUMMARY_MARKDOWN_FILENAME = "summary.md"
_TEMPORARY_MARK = ".partial-"


def image_folder(out: Path, name: str) -> Path:
    """The folder of the image named `name` (its relative path in the dataset, e.g. 'test/001.jpg')."""
    return out / IMAGES_FOLDER / Path(*name.split("/"))


def read_complete(folder: Path) -> dict | None:
    """The metrics record of an image whose folder is complete, or None (absent or unreadable)."""
    try:
        return json.loads((folder / METRICS_FILENAME).read_text())
    except (OSError, ValueError):
        return None


@contextmanager
def atomic_folder(folder: Path) -> Iterator[Path]:
    """Yield a temporary folder next to `folder`; when the block ends without error, it replaces `folder` by one
    rename. Leftovers of interrupted runs for this folder are removed first; on error nothing is kept."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    for stale in folder.parent.glob(f".{folder.name}{_TEMPORARY_MARK}*"):
        shutil.rmtree(stale, ignore_errors=True)
    temporary = folder.parent / f".{folder.name}{_TEMPORARY_MARK}{os.getpid()}"
    temporary.mkdir()
    try:
        yield temporary
        if folder.exists():  # --overwrite: the old result goes just before the new one takes its name
            shutil.rmtree(folder)
        os.rename(temporary, folder)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def write_text_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` under a temporary name, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}{_TEMPORARY_MARK}{os.getpid()}")
    try:
        temporary.write_text(text)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
