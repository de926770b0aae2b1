"""Where edit files come from (registry, user Hub repo, local file) and the catalogue of StyleCLIP mappers."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from editing_directions.errors import MapperFileError
from pti.weights import REGISTRY, WeightFile, WeightsError, resolve, resolve_file

HAIRSTYLES = ("afro", "bob", "bowl", "buzz", "caesar", "crew", "pixie", "straight", "undercut", "wavy")
MAPPER_SUFFIX = ".pt"
_NAME_UNSAFE_CHARACTERS = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class WeightSource:
    """Where one edit file comes from: a registry-style Hub file (sha256 checked when known) or a local file."""

    weight_file: WeightFile | None = None  # fetched through `pti.weights.resolve` (Hub cache / download)
    local_path: Path | None = None  # a file on disk, used as is (no checksum: the user's own file)

    def __post_init__(self):
        if (self.weight_file is None) == (self.local_path is None):
            raise ValueError("a WeightSource needs exactly one of weight_file and local_path")

    def describe(self) -> str:
        """A short human-readable origin, e.g. `hub:DragGan/DragGan-Inversion/PTI/.../age.pt` or a path."""
        if self.weight_file is not None:
            return f"hub:{self.weight_file.repo_id}/{self.weight_file.filename}"
        return str(self.local_path)

    def fetch(self, *, cache_dir: str | Path | None = None, progress: bool = True) -> Path:
        """Local path of the file, downloading it into the Hub cache if needed (`pti.weights.WeightsError` if not)."""
        if self.weight_file is not None:
            return resolve(self.weight_file, cache_dir=cache_dir, progress=progress)
        return resolve_file(self.local_path)


@dataclass(frozen=True)
class MapperEntry:
    """One StyleCLIP mapper on offer: its edit name, display label and file source."""

    name: str  # edit name, as in `Edit('styleclip', name, alpha)`
    label: str  # display name, e.g. "Afro hairstyle"
    source: WeightSource


def mapper_name(stem: str) -> str:
    """Edit name for a mapper file stem: characters other than letters, digits, `_.-` become `_`; lower case."""
    name = _NAME_UNSAFE_CHARACTERS.sub("_", stem).strip("_").lower()
    if not name:
        raise MapperFileError(f"cannot name a mapper after the file stem {stem!r}; rename the file")
    return name


def mapper_label(stem: str) -> str:
    """Display name for a mapper file stem, e.g. `purple_hair` -> `Purple hair`."""
    words = stem.replace("_", " ").replace("-", " ").strip()
    return words[:1].upper() + words[1:]


def default_mapper_catalogue(registry: Mapping[str, WeightFile] = REGISTRY) -> tuple[MapperEntry, ...]:
    """The ten hairstyle mappers of the registry (`styleclip-<style>-hairstyle`), e.g. `afro` -> "Afro hairstyle"."""
    return tuple(
        MapperEntry(style, f"{style.capitalize()} hairstyle",
                    WeightSource(weight_file=registry[f"styleclip-{style}-hairstyle"]))
        for style in HAIRSTYLES)


def folder_mapper_catalogue(folder: str | Path) -> tuple[MapperEntry, ...]:
    """Every `*.pt` file in `folder` (not recursive) as a mapper, named after its file stem, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MapperFileError(f"mapper folder not found: {folder}")
    files = sorted(path for path in folder.iterdir() if path.suffix == MAPPER_SUFFIX and path.is_file())
    return _unique(tuple(MapperEntry(mapper_name(path.stem), mapper_label(path.stem),
                                     WeightSource(local_path=path)) for path in files), str(folder))


def hub_mapper_catalogue(
    repo_id: str,
    *,
    repo_type: str = "model",  # 'model', 'space' or 'dataset'
    revision: str | None = None,  # branch, tag or commit; None is the default branch
    subfolder: str | None = None,  # only files under this folder of the repo (e.g. 'pretrained_models/mappers')
) -> tuple[MapperEntry, ...]:
    """Every `*.pt` file of a Hub repo (optionally under `subfolder`) as a mapper; files download on first use."""
    from huggingface_hub import errors as hub_errors
    from huggingface_hub import list_repo_files

    try:
        files = list_repo_files(repo_id, repo_type=repo_type, revision=revision)
    except (hub_errors.HfHubHTTPError, OSError, ValueError) as error:
        raise WeightsError(f"could not list the files of the Hub {repo_type} repo {repo_id!r}: {error}") from None
    prefix = subfolder.strip("/") + "/" if subfolder else ""
    chosen = sorted(name for name in files if name.startswith(prefix) and name.endswith(MAPPER_SUFFIX))
    entries = []
    for filename in chosen:
        stem = Path(filename).stem
        weight_file = WeightFile(
            f"styleclip-user-{mapper_name(stem)}", repo_id, filename, repo_type, revision or "main",
            licence=f"as stated by the Hub repo {repo_id}", description=f"user-given StyleCLIP mapper {stem}")
        entries.append(MapperEntry(mapper_name(stem), mapper_label(stem), WeightSource(weight_file=weight_file)))
    return _unique(tuple(entries), f"Hub repo {repo_id}")


def _unique(entries: tuple[MapperEntry, ...], where: str) -> tuple[MapperEntry, ...]:
    """Refuse two mapper files that map to the same edit name."""
    seen: dict[str, MapperEntry] = {}
    for entry in entries:
        if entry.name in seen:
            raise MapperFileError(f"{where}: {seen[entry.name].source.describe()} and {entry.source.describe()} "
                                  f"both give the mapper name {entry.name!r}; rename one")
        seen[entry.name] = entry
    return entries
