"""The edits a session can use: their options (names, labels, ranges) and their tensors, loaded once on first use."""
from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from editing_directions import ganspace, global_directions, interfacegan, styleclip
from editing_directions.clip_text import CLIP_KEY, TextEncoder, load_text_encoder, random_text_encoder
from editing_directions.catalogue import MapperEntry, WeightSource, default_mapper_catalogue, \
    folder_mapper_catalogue, hub_mapper_catalogue, mapper_label
from editing_directions.edit import DEFAULT_NEUTRAL, KINDS, TEXT_KIND, Edit
from editing_directions.errors import EditStrengthError, LatentShapeError, UnknownEditError
from editing_directions.global_directions import GlobalDirection
from editing_directions.ganspace import GANSPACE_EDITS, GanspacePCA
from editing_directions.interfacegan import INTERFACEGAN_DIRECTIONS
from editing_directions.styleclip import LevelsMapper
from pti.weights import REGISTRY, WeightFile

_DIRECTION_SPECS = {spec.name: spec for spec in INTERFACEGAN_DIRECTIONS}
_GANSPACE_SPECS = {spec.name: spec for spec in GANSPACE_EDITS}
_PCA_RESOURCE = "ganspace:pca"  # the three GANSpace edits share one PCA file
# What text edits need (fs3, the CLIP text encoder, the generator's per-layer std of s), each loaded on first use.
_TEXT_RESOURCES = ("text:fs3", "text:encoder", "text:std")
_DIRECTION_CACHE_SIZE = 256  # text directions kept (one per neutral, target and beta)


@dataclass(frozen=True)
class EditOption:
    """One edit on offer: what a slider or the command line needs (kind, name, label, range, default strength)."""

    kind: str
    name: str
    label: str
    min: float
    max: float
    step: float
    default: float  # InterfaceGAN 0 (identity), GANSpace PTI's strength, StyleCLIP alpha 0.1

    @property
    def key(self) -> str:
        """`kind:name`, unique within a library."""
        return f"{self.kind}:{self.name}"


# The one option of text edits (any target sentence; strength = alpha); not listed by `EditLibrary.options()`.
TEXT_OPTION = EditOption(TEXT_KIND, "sentence", "Text (StyleCLIP global direction)", global_directions.ALPHA_MIN,
                         global_directions.ALPHA_MAX, global_directions.ALPHA_STEP, global_directions.DEFAULT_ALPHA)


def _resource(kind: str, name: str) -> str:
    """Cache key of the file an edit needs."""
    return _PCA_RESOURCE if kind == "ganspace" else f"{kind}:{name}"


def _direction_option(name: str, label: str | None = None) -> EditOption:
    """Option of a known InterfaceGAN direction."""
    if name not in _DIRECTION_SPECS:
        raise UnknownEditError(f"unknown InterfaceGAN direction {name!r}; known: {', '.join(_DIRECTION_SPECS)}")
    spec = _DIRECTION_SPECS[name]
    return EditOption("interfacegan", name, label or spec.label, spec.min, spec.max, spec.step, spec.default)


def _ganspace_options(labels: Mapping[str, str]) -> list[EditOption]:
    """Options of PTI's three GANSpace edits."""
    return [EditOption("ganspace", spec.name, labels.get(f"ganspace:{spec.name}", spec.label), spec.min, spec.max,
                       spec.step, spec.default) for spec in GANSPACE_EDITS]


def _mapper_option(name: str, label: str) -> EditOption:
    """Option of a StyleCLIP mapper."""
    return EditOption("styleclip", name, label, styleclip.ALPHA_MIN, styleclip.ALPHA_MAX, styleclip.ALPHA_STEP,
                      styleclip.DEFAULT_ALPHA)


class EditLibrary:
    """The available edits and their tensors: each file is fetched and loaded on first use, then kept here."""

    def __init__(
        self,
        options: Sequence[EditOption],  # what is on offer, in display order
        loaders: Mapping[str, Callable[[], object]],  # `kind:name` (or 'ganspace:pca') -> loads the tensor/mapper
        *,
        num_ws: int | None = None,  # if given, codes must have this many W+ layers
        description: str = "",  # shown to people, e.g. that the edits are random demo edits
    ):
        self._options = {option.key: option for option in options}
        missing = sorted({_resource(o.kind, o.name) for o in options} - set(loaders))
        if missing:
            raise ValueError(f"no loader for {', '.join(missing)}")
        text_loaders = set(_TEXT_RESOURCES) & set(loaders)
        if text_loaders and text_loaders != set(_TEXT_RESOURCES):
            raise ValueError(f"text edits need loaders for all of {', '.join(_TEXT_RESOURCES)}")
        self._loaders = dict(loaders)
        self._loaded: dict[str, object] = {}
        self._lock = threading.Lock()
        self._directions: OrderedDict[tuple[str, str, float], GlobalDirection] = OrderedDict()
        self.num_ws = num_ws
        self.description = description

    @classmethod
    def from_registry(
        cls,
        *,
        directions_dir: str | Path | None = None,  # folder with age.pt, smile.pt, rotation.pt, ffhq_pca.pt (no Hub)
        mapper_dir: str | Path | None = None,  # folder whose *.pt files are extra mappers
        mapper_repo: str | None = None,  # Hub repo whose *.pt files are extra mappers
        mapper_repo_type: str = "model",  # 'model', 'space' or 'dataset'
        mapper_repo_revision: str | None = None,  # branch, tag or commit of `mapper_repo`
        mapper_subfolder: str | None = None,  # only mappers under this folder of `mapper_repo`
        default_mappers: bool = True,  # offer the ten hairstyle mappers of the registry
        cache_dir: str | Path | None = None,  # Hub cache folder; None is huggingface_hub's default
        progress: bool = True,  # show download progress
        device: torch.device | str = "cpu",  # where loaded mappers and the CLIP text tower run
        registry: Mapping[str, WeightFile] | None = None,  # default `pti.weights.REGISTRY` (tests pass their own)
        generator: torch.nn.Module | None = None,  # offers text edits: the generator whose std of s scales them
        std_cache_dir: str | Path | None = None,  # where that std is kept (default: next to converted generators)
    ) -> EditLibrary:
        """The real edits: InterfaceGAN + GANSpace from the registry (or `directions_dir`), mappers from catalogues,
        and, given a `generator`, text edits (StyleCLIP global directions: fs3 and CLIP from the registry).

        Nothing is downloaded here (a `mapper_repo` is only listed): each file is fetched (sha256-checked where
        the registry knows it) and loaded when an edit first needs it.
        Files in `directions_dir` and `mapper_dir` are the user's own and used as they are. Mappers from
        `mapper_dir` / `mapper_repo` replace default ones of the same name.
        """
        registry = REGISTRY if registry is None else registry

        def source(registry_key: str, filename: str) -> WeightSource:
            """The registry's Hub file, or the same file name in `directions_dir`."""
            if directions_dir is None:
                return WeightSource(weight_file=registry[registry_key])
            return WeightSource(local_path=Path(directions_dir) / filename)

        def fetch(weight_source: WeightSource) -> Path:
            """Local path of a source, downloaded into `cache_dir` if needed."""
            return weight_source.fetch(cache_dir=cache_dir, progress=progress)

        options: list[EditOption] = []
        loaders: dict[str, Callable[[], object]] = {}
        for spec in INTERFACEGAN_DIRECTIONS:
            options.append(_direction_option(spec.name))
            direction_source = source(spec.registry_key, spec.filename)
            loaders[f"interfacegan:{spec.name}"] = lambda s=direction_source: interfacegan.load_direction(fetch(s))
        options.extend(_ganspace_options({}))
        pca_source = source(ganspace.REGISTRY_KEY, ganspace.FILENAME)
        loaders[_PCA_RESOURCE] = lambda: ganspace.load_pca(fetch(pca_source))
        mappers: dict[str, MapperEntry] = {}
        catalogues = [default_mapper_catalogue(registry) if default_mappers else ()]
        if mapper_dir is not None:
            catalogues.append(folder_mapper_catalogue(mapper_dir))
        if mapper_repo is not None:
            catalogues.append(hub_mapper_catalogue(mapper_repo, repo_type=mapper_repo_type,
                                                   revision=mapper_repo_revision, subfolder=mapper_subfolder))
        for entry in (entry for catalogue in catalogues for entry in catalogue):
            mappers[entry.name] = entry
        for entry in mappers.values():
            options.append(_mapper_option(entry.name, entry.label))
            loaders[f"styleclip:{entry.name}"] = lambda e=entry: styleclip.load_mapper(fetch(e.source), device=device)
        if generator is not None:
            channels = sum(generator.synthesis.style_channels())
            fs3_source = WeightSource(weight_file=registry[global_directions.FS3_KEY])
            clip_source = WeightSource(weight_file=registry[CLIP_KEY])
            loaders["text:fs3"] = lambda: global_directions.load_fs3(fetch(fs3_source), channels=channels)
            loaders["text:encoder"] = lambda: load_text_encoder(fetch(clip_source), device=device)
            loaders["text:std"] = lambda: global_directions.cached_style_std(generator, cache_dir=std_cache_dir)
        return cls(options, loaders)

    @classmethod
    def from_tensors(
        cls,
        *,
        directions: Mapping[str, torch.Tensor] | None = None,  # InterfaceGAN name ('age', 'smile', 'pose') -> [D]
        pca: GanspacePCA | None = None,  # enables the three GANSpace edits
        mappers: Mapping[str, LevelsMapper] | None = None,  # mapper name -> mapper
        labels: Mapping[str, str] | None = None,  # `kind:name` -> display label (default: the usual labels)
        num_ws: int | None = None,  # if given, codes must have this many W+ layers
        description: str = "",
        fs3: np.ndarray | None = None,  # text edits: one unit CLIP vector per style channel (channels, D)
        text_encoder: TextEncoder | Callable[[], TextEncoder] | None = None,  # text edits: sentence -> feature
        # (D,); a function that builds one is called on the first text edit
        layer_std: Sequence[np.ndarray] | None = None,  # text edits: per-layer std of s
    ) -> EditLibrary:
        """A library over tensors already in memory (tests, demo edits); validated like loaded files. Text edits are
        offered when `fs3`, `text_encoder` and `layer_std` are all given."""
        labels = labels or {}
        options: list[EditOption] = []
        loaders: dict[str, Callable[[], object]] = {}
        for name, tensor in (directions or {}).items():
            options.append(_direction_option(name, labels.get(f"interfacegan:{name}")))
            direction = interfacegan.validate_direction(tensor, source=f"direction {name!r}")
            loaders[f"interfacegan:{name}"] = lambda d=direction: d
        if pca is not None:
            checked = ganspace.validate_pca(pca.mean, pca.comp, pca.std)
            options.extend(_ganspace_options(labels))
            loaders[_PCA_RESOURCE] = lambda: checked
        for name, mapper in (mappers or {}).items():
            if not isinstance(mapper, LevelsMapper):
                raise TypeError(f"mapper {name!r} should be a LevelsMapper, got {type(mapper).__name__}")
            options.append(_mapper_option(name, labels.get(f"styleclip:{name}", mapper_label(name))))
            loaders[f"styleclip:{name}"] = lambda m=mapper: m
        text = (fs3, text_encoder, layer_std)
        if any(part is not None for part in text):
            if any(part is None for part in text):
                raise ValueError("text edits need all of fs3, text_encoder and layer_std")
            stds = tuple(np.asarray(std, dtype=np.float32) for std in layer_std)
            if np.asarray(fs3).shape[0] != sum(len(std) for std in stds):
                raise ValueError(f"fs3 has {np.asarray(fs3).shape[0]} rows but layer_std has "
                                 f"{sum(len(std) for std in stds)} channels")
            loaders.update({"text:fs3": lambda: np.asarray(fs3, dtype=np.float32),
                            "text:encoder": (lambda: text_encoder) if isinstance(text_encoder, TextEncoder)
                            else text_encoder, "text:std": lambda: stds})
        return cls(options, loaders, num_ws=num_ws, description=description)

    def options(self, kind: str | None = None) -> tuple[EditOption, ...]:
        """Every edit on offer (of one kind if given), in display order."""
        return tuple(option for option in self._options.values() if kind is None or option.kind == kind)

    def option(self, kind: str, name: str) -> EditOption:
        """The option of one edit; unknown kind or name -> UnknownEditError listing what exists."""
        if kind not in KINDS:
            raise UnknownEditError(f"unknown edit kind {kind!r}; expected one of {', '.join(KINDS)}")
        if kind == TEXT_KIND:
            if not self.offers_text:
                raise UnknownEditError("this library has no text edits (they need fs3, CLIP and the generator)")
            return TEXT_OPTION
        option = self._options.get(f"{kind}:{name}")
        if option is None:
            known = ", ".join(o.name for o in self.options(kind)) or "none in this library"
            raise UnknownEditError(f"unknown {kind} edit {name!r}; available: {known}")
        return option

    def validate(self, edit: Edit) -> EditOption:
        """Check that the edit exists here and its strength is within the option's range."""
        option = self.option(edit.kind, edit.name)
        if not (math.isfinite(edit.strength) and option.min <= edit.strength <= option.max):
            raise EditStrengthError(f"{edit.kind} edit {edit.name!r}: strength {edit.strength:g} is outside "
                                    f"the allowed range [{option.min:g}, {option.max:g}]")
        if edit.kind == TEXT_KIND and not global_directions.BETA_MIN <= edit.beta <= global_directions.BETA_MAX:
            raise EditStrengthError(f"text edit {edit.name!r}: beta {edit.beta:g} is outside the allowed range "
                                    f"[{global_directions.BETA_MIN:g}, {global_directions.BETA_MAX:g}]; the authors "
                                    f"suggest {global_directions.DEFAULT_BETA:g}")
        return option

    @property
    def offers_text(self) -> bool:
        """Whether text edits (StyleCLIP global directions) are offered."""
        return "text:fs3" in self._loaders

    def prepare_text(self) -> None:
        """Load what text edits need now (fs3, CLIP, the std of s, the default neutral sentence's features) instead
        of on the first text edit; errors are raised here and again at that edit."""
        for resource in _TEXT_RESOURCES:
            self._load(resource)
        encoder: TextEncoder = self._load("text:encoder")
        encoder.encode(DEFAULT_NEUTRAL)

    def text_direction(self, edit: Edit) -> GlobalDirection:
        """A text edit's per-layer offsets of s (before alpha) and its channel count; CLIP runs here (on the CPU
        unless its model was put elsewhere), once per sentence; directions are cached."""
        self.validate(edit)
        key = (edit.neutral, edit.name, edit.beta)
        with self._lock:
            if key in self._directions:
                self._directions.move_to_end(key)
                return self._directions[key]
        encoder: TextEncoder = self._load("text:encoder")
        neutral = encoder.encode(encoder.check(edit.neutral, "neutral sentence"))
        target = encoder.encode(encoder.check(edit.name, "target sentence"))
        direction = global_directions.global_direction(self._load("text:fs3"), neutral, target, beta=edit.beta,
                                                       layer_std=self._load("text:std"))
        with self._lock:
            self._directions[key] = direction
            while len(self._directions) > _DIRECTION_CACHE_SIZE:
                self._directions.popitem(last=False)
        return direction

    def style_offsets(self, edit: Edit) -> list[torch.Tensor]:
        """`alpha * delta_s` of a text edit: one float32 tensor (C,) per conv layer."""
        direction = self.text_direction(edit)
        return [torch.from_numpy(part) * edit.strength for part in direction.delta_s]

    def direction(self, name: str) -> torch.Tensor:
        """The InterfaceGAN direction [D] (loaded on first use)."""
        self.option("interfacegan", name)
        return self._load(f"interfacegan:{name}")

    def pca(self) -> GanspacePCA:
        """The GANSpace PCA (loaded on first use)."""
        if not self.options("ganspace"):
            raise UnknownEditError("this library has no GANSpace edits")
        return self._load(_PCA_RESOURCE)

    def mapper(self, name: str) -> LevelsMapper:
        """The StyleCLIP mapper `name` (loaded on first use)."""
        self.option("styleclip", name)
        return self._load(f"styleclip:{name}")

    def ganspace_coordinate(self, name: str, w: torch.Tensor) -> torch.Tensor:
        """Current coordinate (N,) of W+ codes for GANSpace edit `name`: the strength at which it is the identity."""
        self.option("ganspace", name)
        return ganspace.component_coordinate(self._check_code(w), self.pca(), _GANSPACE_SPECS[name].component)

    def apply(self, edit: Edit, w: torch.Tensor) -> torch.Tensor:
        """Apply one edit to W+ codes (N, L, D) and return the edited codes (a new tensor)."""
        self.validate(edit)
        w = self._check_code(w)
        if edit.kind == "interfacegan":
            return interfacegan.apply_direction(w, self.direction(edit.name), edit.strength)
        if edit.kind == "ganspace":
            return ganspace.apply_ganspace(w, self.pca(), _GANSPACE_SPECS[edit.name], edit.strength)
        if edit.kind == TEXT_KIND:  # a StyleSpace edit: W+ unchanged (its offsets come from `style_offsets`)
            return w.clone()
        return styleclip.apply_mapper(w, self.mapper(edit.name), edit.strength)

    def _check_code(self, w: torch.Tensor) -> torch.Tensor:
        """Refuse anything but a floating-point W+ code (N, L, D) with this library's layer count."""
        if not isinstance(w, torch.Tensor) or not w.is_floating_point() or w.ndim != 3:
            shape = tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__
            raise LatentShapeError(f"edits need a floating-point W+ code of shape (N, L, D), got {shape}")
        if self.num_ws is not None and w.shape[1] != self.num_ws:
            raise LatentShapeError(f"this library's edits are for {self.num_ws} W+ layers; the code has {w.shape[1]}")
        return w

    def _load(self, resource: str) -> object:
        """Load a resource once (thread-safe), then return the cached object."""
        with self._lock:
            if resource not in self._loaded:
                self._loaded[resource] = self._loaders[resource]()
            return self._loaded[resource]


DEMO_CLIP_DIM = 16  # width of the demo text features: random fs3 rows of this width keep channels at beta 0.08-0.3


def demo_library(w_dim: int, num_ws: int, seed: int = 0, *, generator: torch.nn.Module | None = None) -> EditLibrary:
    """Seeded RANDOM edits sized for a small generator (e.g. the tiny model): the real edit names, no meaning.
    With `generator`, random text edits too: a random fs3 for its style channels, a tiny random CLIP text tower,
    and the std of s computed from the generator."""
    random_generator = torch.Generator().manual_seed(seed)
    directions = {}
    for spec in INTERFACEGAN_DIRECTIONS:
        direction = torch.randn(w_dim, generator=random_generator)
        directions[spec.name] = direction / direction.norm()
    num_components = max(spec.component for spec in GANSPACE_EDITS) + 1
    comp = torch.randn(num_components, 1, w_dim, generator=random_generator)
    pca = GanspacePCA(mean=torch.randn(1, w_dim, generator=random_generator) * 0.1,
                      comp=comp / comp.norm(dim=2, keepdim=True),
                      std=torch.rand(num_components, generator=random_generator) + 0.5)
    mappers = {f"demo_{index}": styleclip.random_levels_mapper(w_dim, seed=seed * 1000 + index) for index in (1, 2)}
    labels = {f"interfacegan:{spec.name}": f"{spec.label} (random demo direction)" for spec in INTERFACEGAN_DIRECTIONS}
    labels.update({f"ganspace:{spec.name}": f"{spec.label} (random demo component)" for spec in GANSPACE_EDITS})
    labels.update({f"styleclip:{name}": f"Random demo mapper {name[-1]}" for name in mappers})
    description = (f"Random demo edits for a {w_dim}-dim generator with {num_ws} W+ layers (seed {seed}): "
                   "seeded random directions, PCA and mappers under the real edit names; they carry no meaning.")
    text: dict = {}
    if generator is not None:
        fs3 = torch.randn(sum(generator.synthesis.style_channels()), DEMO_CLIP_DIM, generator=random_generator)
        text = {"fs3": (fs3 / fs3.norm(dim=1, keepdim=True)).numpy(),
                "text_encoder": lambda: random_text_encoder(embed_dim=DEMO_CLIP_DIM, seed=seed),
                "layer_std": global_directions.style_std(generator, samples=10_000)}
        description += " Text edits use a random fs3 and a tiny random CLIP text tower."
    return EditLibrary.from_tensors(directions=directions, pca=pca, mappers=mappers, labels=labels, num_ws=num_ws,
                                    description=description, **text)
