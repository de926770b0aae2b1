"""Where edit files come from (registry, local file, user Hub repo) and the catalogue of StyleCLIP mappers."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from editing_directions.errors import EditingError, MapperFileError

HAIRSTYLES = ("afro", "bob", "bowl", "buzz", "caesar", "crew", "pixie", "straight", "undercut", "wavy")
MAPPER_SUFFIX = ".pt"
_NAME_UNSAFE_CHARACTERS = re.compile(r"[^A-Za-z0-9_.-]+")


class WeightSourceError(EditingError, OSError):
    """An edit file could not be fetched (missing local file, failed or refused Hub download)."""


@dataclass(frozen=True)
class WeightSource:
    """Where one edit file comes from: exactly one of a registry key, a local file, or a file in a Hub repo."""

    registry_key: str | None = None  # key in `pti.weights.REGISTRY`: Hub download with sha256 check
    local_path: Path | None = None  # a file on disk, used as is
    repo_id: str | None = None  # a user-given Hub repo (no known sha256), with `filename` inside it
    filename: str | None = None  # path of the file inside `repo_id`
    repo_type: str = "model"  # 'model', 'space' or 'dataset'
    revision: str | None = None  # branch, tag or commit of `repo_id`; None is the default branch

    def __post_init__(self):
        given = [self.registry_key is not None, self.local_path is not None, self.repo_id is not None]
        if sum(given) != 1 or (self.repo_id is not None) != (self.filename is not None):
            raise ValueError("a WeightSource needs exactly one of registry_key, local_path, or repo_id with filename")

    def describe(self) -> str:
        """A short human-readable origin, e.g. `registry:interfacegan-age` or `hub:user/repo/afro.pt`."""
        if self.registry_key is not None:
            return f"registry:{self.registry_key}"
        if self.local_path is not None:
            return str(self.local_path)
        return f"hub:{self.repo_id}/{self.filename}"

    def fetch(self, *, cache_dir: str | Path | None = None, progress: bool = True) -> Path:
        """Local path of the file, downloading it (into the Hub cache) if needed."""
        if self.local_path is not None:
            if not Path(self.local_path).is_file():
                raise WeightSourceError(f"file not found: {self.local_path}")
            return Path(self.local_path)
        if self.registry_key is not None:
            from pti.weights import resolve

            return Path(resolve(self.registry_key, cache_dir=cache_dir, progress=progress))
        from huggingface_hub import errors as hub_errors
        from huggingface_hub import hf_hub_download

        try:
            return Path(hf_hub_download(repo_id=self.repo_id, filename=self.filename, repo_type=self.repo_type,
                                        revision=self.revision, cache_dir=cache_dir))
        except (hub_errors.HfHubHTTPError, hub_errors.EntryNotFoundError, OSError, ValueError) as error:
            raise WeightSourceError(f"could not download {self.describe()}: {error}") from None


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


def default_mapper_catalogue() -> tuple[MapperEntry, ...]:
    """The ten hairstyle mappers of the registry (`styleclip-<style>-hairstyle`), e.g. `afro` -> "Afro hairstyle"."""
    return tuple(
        MapperEntry(style, f"{style.capitalize()} hairstyle", WeightSource(registry_key=f"styleclip-{style}-hairstyle"))
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
        raise WeightSourceError(f"could not list the files of Hub repo {repo_id!r}: {error}") from None
    prefix = subfolder.strip("/") + "/" if subfolder else ""
    chosen = sorted(name for name in files if name.startswith(prefix) and name.endswith(MAPPER_SUFFIX))
    entries = tuple(
        MapperEntry(mapper_name(Path(name).stem), mapper_label(Path(name).stem),
                    WeightSource(repo_id=repo_id, filename=name, repo_type=repo_type, revision=revision))
        for name in chosen)
    return _unique(entries, f"Hub repo {repo_id}")


def _unique(entries: tuple[MapperEntry, ...], where: str) -> tuple[MapperEntry, ...]:
    """Refuse two mapper files that map to the same edit name."""
    seen: dict[str, MapperEntry] = {}
    for entry in entries:
        if entry.name in seen:
            raise MapperFileError(f"{where}: {seen[entry.name].source.describe()} and {entry.source.describe()} "
                                  f"both give the mapper name {entry.name!r}; rename one")
        seen[entry.name] = entry
    return entries
