"""The images of a dataset: every image file under a folder (recursively), or the paths listed in a text file."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

# File name endings taken as images when a folder is scanned (case-insensitive).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


class DatasetSourceError(ValueError):
    """The dataset source is missing, empty, or lists paths that cannot be used."""


@dataclass(frozen=True)
class DatasetImage:
    """One image of a dataset: its file and the relative path its outputs are named after."""

    path: Path  # the image file
    name: str  # relative POSIX path, unique in the dataset, e.g. "test/00123.jpg"; outputs mirror it


def list_images(source: str | os.PathLike, *, exclude: str | os.PathLike | None = None) -> list[DatasetImage]:
    """The images of `source` sorted by name: a folder's image files (recursively, hidden entries skipped) or the
    lines of a text file (one path a line; blank lines and `#` comments ignored; relative paths are relative to the
    list's folder). Files under `exclude` (e.g. an output folder inside the source) are left out."""
    source = Path(source)
    if source.is_dir():
        images = _scan_folder(source, Path(exclude).resolve() if exclude is not None else None)
    elif source.is_file():
        images = _read_list(source)
    else:
        raise DatasetSourceError(f"no such folder or list file: {source}")
    if not images:
        raise DatasetSourceError(f"{source} holds no images (looked for {', '.join(IMAGE_SUFFIXES)})"
                                 if source.is_dir() else f"{source} lists no images")
    return sorted(images, key=lambda image: image.name)


def _scan_folder(folder: Path, exclude: Path | None) -> list[DatasetImage]:
    images = []
    for directory, subdirectories, files in os.walk(folder):
        here = Path(directory)
        subdirectories[:] = [d for d in subdirectories if not d.startswith(".")
                             and (exclude is None or (here / d).resolve() != exclude)]
        for file in files:
            if not file.startswith(".") and file.lower().endswith(IMAGE_SUFFIXES):
                path = here / file
                images.append(DatasetImage(path=path, name=path.relative_to(folder).as_posix()))
    return images


def _read_list(list_file: Path) -> list[DatasetImage]:
    base = list_file.parent.resolve()
    images: dict[str, DatasetImage] = {}
    for number, line in enumerate(list_file.read_text().splitlines(), start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        path = (base / entry).resolve()
        name = _name_for(path, base)
        if name in images and images[name].path != path:
            raise DatasetSourceError(f"{list_file}:{number}: {entry} would share its output name {name!r} with "
                                     f"{images[name].path}")
        images[name] = DatasetImage(path=path, name=name)
    return list(images.values())


def _name_for(path: Path, base: Path) -> str:
    """`path` relative to `base` when under it; otherwise the absolute path without its root (stable either way)."""
    if path.is_relative_to(base):
        return path.relative_to(base).as_posix()
    return PurePosixPath(*path.parts[1:]).as_posix()
