"""The face editor behind the app: loads the models once; methods take and return images and plain values."""
from __future__ import annotations

import contextlib
import copy
import importlib.util
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from PIL import Image

import alignment
from alignment.landmarks import LANDMARK_MODEL_KEY
from editing_directions.chain import EditChain
from editing_directions.edit import Edit
from editing_directions.library import EditLibrary, EditOption, demo_library
from pti import weights
from pti.config import PRESET_NAMES, PTIConfig, preset
from pti.e4e import E4E, E4ECheckpointError, E4EGeneratorMismatchError
from pti.fast_path import FAST_SETTINGS, SpeedSettings, apply_to_config, prepare_generator, speed_context
from pti.gpu import gpu_seconds, gpu_task
from pti.losses import BACKBONE_WEIGHTS
from pti.pipeline import PIVOT_METHODS, PTIPipeline
from pti.progress import Progress
from pti.projector import Pivot
from pti.tuning import TunedGenerator

DEFAULT_MODEL = "stylegan2-ffhq-1024"
TINY_MODEL = "tiny"
# Smallest side of the aligned face shown to people (the tiny model works at 32 px; its input is downscaled).
MIN_ALIGNED_SIZE = 256
# Previews per phase during an inversion (a preview costs a device -> host copy).
PREVIEWS_PER_PHASE = 12
# Loss reports per phase (each report syncs the device).
REPORTS_PER_PHASE = 100
# GPU seconds asked for to render an edit chain, and to time a few steps for the estimate (ZeroGPU).
RENDER_GPU_SECONDS = 20
ESTIMATE_GPU_SECONDS = 30
# The PyPI package that ships a byte-identical copy of dlib's landmark model (an offline fallback).
LANDMARKS_PACKAGE = "face_recognition_models"
# W+ shape (num_ws, w_dim) of the generator the released e4e encoder was trained for (FFHQ, 1024 px).
RELEASED_E4E_SHAPE = (18, 512)


class SettingsError(ValueError):
    """Inversion settings out of range or of the wrong type."""


class EditorUnavailableError(RuntimeError):
    """The editor cannot do this: a file it needs is missing (the message says which and how to provide it)."""


@dataclass(frozen=True)
class MissingFile:
    """A pretrained file the editor needs but could not find, and how to provide it."""

    key: str  # registry key in `pti.weights.REGISTRY`
    needed_for: str  # what does not work without it, e.g. "inversion"
    message: str  # one sentence from `pti.weights`: what is missing and how to provide it


@dataclass(frozen=True)
class InversionSettings:
    """What a person picks before pressing Invert: a preset, its step counts, locality on/off, seed, pivot."""

    preset: str = "fast"  # 'paper', 'fast' or 'custom' (= the paper's settings with these step counts)
    projection_steps: int = 100  # W projection steps
    tuning_steps: int = 50  # pivotal tuning steps
    locality: bool = True  # locality regularisation during tuning
    seed: int = 0  # seed of the projection noise and the locality samples
    pivot: str = "w"  # 'w' (the paper's W projection) or 'e4e' (the e4e encoder's W+ code; no projection steps)

    def __post_init__(self) -> None:
        if self.preset not in PRESET_NAMES:
            raise SettingsError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESET_NAMES)}")
        if self.pivot not in PIVOT_METHODS:
            raise SettingsError(f"unknown pivot {self.pivot!r}; choose one of {', '.join(PIVOT_METHODS)}")
        for name in ("projection_steps", "tuning_steps", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise SettingsError(f"{name.replace('_', ' ')} must be a whole number, got {value!r}")
        if self.projection_steps < 1 or self.tuning_steps < 1:
            raise SettingsError("projection and tuning need at least 1 step each")
        if self.seed < 0:
            raise SettingsError(f"the seed must be 0 or more, got {self.seed}")

    @property
    def gpu_seconds(self) -> int:
        """GPU time to ask for (ZeroGPU) for these step counts (an e4e pivot takes no projection steps)."""
        return gpu_seconds(self.projection_steps if self.pivot == "w" else 0, self.tuning_steps)


@dataclass(frozen=True)
class Reconstruction:
    """How close one rendering is to the aligned face."""

    image: Image.Image  # the rendering, RGB, at the generator's resolution
    lpips: float  # LPIPS distance to the aligned face (lower is better)
    mse: float  # mean squared error in [-1, 1] pixel units (lower is better)


@dataclass(frozen=True, eq=False)
class Inversion:
    """The result of PTI for one photo: its tuned generator (on the CPU), pivot and reconstructions."""

    tuned: TunedGenerator  # generator on the CPU; this session's own copy
    pivot: Pivot
    pivot_render: Reconstruction  # the pivot through the original generator
    tuned_render: Reconstruction  # the pivot through the tuned generator
    settings: InversionSettings
    seconds: float  # wall-clock time of the inversion


@dataclass(frozen=True, eq=False)
class Photo:
    """A person's photo (upright RGB) and the face aligned from it."""

    original: Image.Image
    aligned: alignment.AlignedFace


@dataclass(frozen=True, eq=False)
class EditingSession:
    """Everything one session edits: the photo, its inversion, the edit chain and the rendering of every step."""

    photo: Photo
    inversion: Inversion
    edits: tuple[Edit, ...] = ()
    step_images: tuple[Image.Image, ...] = ()  # the start (PTI reconstruction), then one image per edit

    @property
    def final_image(self) -> Image.Image:
        """The face after every edit (the reconstruction when there are none)."""
        return self.step_images[-1] if self.step_images else self.inversion.tuned_render.image


@dataclass(frozen=True)
class Downloads:
    """Files written for a session, for people to download."""

    aligned: Path  # aligned face (PNG)
    final: Path  # final edited face (PNG)
    pivot: Path  # pivot (.npy)
    tuned_weights: Path  # tuned generator (.safetensors)
    chain: Path  # edit chain (JSON)
    pasted: Path | None  # the edit pasted back into the photo (PNG), when asked for

    @property
    def paths(self) -> list[Path]:
        """Every file, in display order."""
        files = [self.aligned, self.final, self.pasted, self.pivot, self.tuned_weights, self.chain]
        return [path for path in files if path is not None]


def _inversion_gpu_seconds(editor: FaceEditor, aligned_face: alignment.AlignedFace, settings: InversionSettings,
                           *args: object, **kwargs: object) -> int:
    """GPU seconds to ask ZeroGPU for an inversion: from its step counts (same arguments as the method)."""
    return settings.gpu_seconds


class FaceEditor:
    """Loads the generator, landmark model, LPIPS and edits once; aligns, inverts (PTI), edits and pastes back."""

    def __init__(
        self,
        model: str = DEFAULT_MODEL,  # registry generator name, 'tiny', or a path to a .pkl / .safetensors file
        *,
        device: torch.device | str = "cpu",  # where inversion and rendering run
        landmarks_path: str | Path | None = None,  # dlib 68-landmark model; None: the registry (or its PyPI copy)
        lpips_pretrained: bool | None = None,  # None: pretrained when its files are available (random for 'tiny')
        mapper_dir: str | Path | None = None,  # folder of extra StyleCLIP mapper files (*.pt)
        e4e: E4E | str | Path | None = None,  # e4e encoder or checkpoint; None: the registry's, if it fits the model
    ) -> None:
        self.model_name = model
        self._e4e = e4e
        self.device = torch.device(device)
        # The fast path (fused ops, fp16 blocks, TF32, tuning LPIPS at 256 px) on the GPU; the plain config on the CPU.
        self._speed: SpeedSettings | None = FAST_SETTINGS if self.device.type == "cuda" else None
        self._missing: list[MissingFile] = []
        self._landmarks_path = self._load_landmarks_path(landmarks_path)
        self._generator = self._load_generator(model)
        self.lpips_pretrained = self._load_lpips_choice(lpips_pretrained)
        self._pipeline = self._load_pipeline()
        self._library = self._load_library(mapper_dir)

    # ----- what is available -------------------------------------------------------------------------------------

    @property
    def is_tiny(self) -> bool:
        """Whether this is the tiny test generator (random weights, 32 px): for trying the app offline."""
        return self.model_name == TINY_MODEL

    @property
    def generator(self) -> torch.nn.Module | None:
        """The original (untuned) generator, shared by every session: read it, never change it."""
        return self._generator

    @property
    def landmarks_path(self) -> Path | None:
        """The dlib landmark model file in use (None when it could not be found)."""
        return self._landmarks_path

    @property
    def can_align(self) -> bool:
        """Whether the landmark model was found (alignment works)."""
        return self._landmarks_path is not None

    @property
    def can_invert(self) -> bool:
        """Whether the generator and LPIPS are loaded (inversion and edits work)."""
        return self._pipeline is not None

    @property
    def resolution(self) -> int | None:
        """The generator's output size in pixels (None when it could not be loaded)."""
        return None if self._generator is None else int(self._generator.img_resolution)

    @property
    def pivot_choices(self) -> tuple[str, ...]:
        """The ways to find the pivot here: 'w' (the paper's W projection) first, then 'e4e' when an encoder was
        given or the generator has the W+ shape the released encoder was trained for (FFHQ, 18 x 512)."""
        generator = self._generator
        fits = generator is not None and (generator.num_ws, generator.w_dim) == RELEASED_E4E_SHAPE
        return PIVOT_METHODS if self._e4e is not None or fits else ("w",)

    @property
    def default_pivot(self) -> str:
        """The pivot to preselect: e4e on a CPU where it is offered (one pass instead of minutes), else 'w'."""
        return "e4e" if "e4e" in self.pivot_choices and self.device.type == "cpu" else "w"

    def prepare_pivot(self, pivot: str) -> None:
        """Check that `pivot` is offered and load what it needs (the e4e encoder, on its first use).

        A missing, unreadable or unfitting encoder -> `EditorUnavailableError` saying so; nothing else changes.
        """
        if pivot not in self.pivot_choices:
            raise SettingsError(f"the {pivot!r} pivot is not offered for this model; choose one of "
                                f"{', '.join(self.pivot_choices)}")
        if pivot != "e4e":
            return
        try:
            self._require_pipeline().load_e4e()
        except (weights.WeightsError, E4ECheckpointError, E4EGeneratorMismatchError, FileNotFoundError) as error:
            raise EditorUnavailableError(f"The e4e encoder could not be loaded, so the e4e pivot is not available "
                                         f"(the W projection pivot still is): {error}") from error

    def missing_files(self) -> tuple[MissingFile, ...]:
        """Files that could not be found, each with what needs it and how to provide it."""
        return tuple(self._missing)

    def notices(self) -> tuple[str, ...]:
        """Things people should know about this set-up (tiny model, random LPIPS, slow CPU), one sentence each."""
        notes = []
        if self.is_tiny:
            notes.append("This is the tiny test generator (random weights, 32x32 px): the whole pipeline runs, but "
                         "the faces it draws are noise. Leave out --model tiny for the FFHQ 1024 model.")
        if self.can_invert and not self.lpips_pretrained:
            notes.append("LPIPS uses random backbone weights (the pretrained VGG16 / AlexNet files are not "
                         "available), so the LPIPS losses and metrics are not perceptual.")
        if self._library is not None and self._library.description:
            notes.append(self._library.description)
        if self.device.type == "cpu" and self.can_invert and not self.is_tiny:
            notes.append("Running on the CPU: the paper's settings take well over an hour here; the fast preset "
                         "takes minutes. A GPU takes seconds.")
        return tuple(notes)

    def edit_options(self) -> tuple[EditOption, ...]:
        """Every edit on offer (InterfaceGAN, GANSpace, StyleCLIP), in display order."""
        return () if self._library is None else self._library.options()

    # ----- settings ----------------------------------------------------------------------------------------------

    def settings_for(self, preset_name: str, *, seed: int = 0, pivot: str = "w") -> InversionSettings:
        """The settings of a named preset ('custom' starts from the paper's)."""
        config = preset(preset_name)
        return InversionSettings(preset=preset_name, projection_steps=config.projection.num_steps,
                                 tuning_steps=config.tuning.num_steps, locality=config.tuning.locality.enabled,
                                 seed=seed, pivot=pivot)

    def config_for(self, settings: InversionSettings) -> PTIConfig:
        """The PTI configuration of `settings`: the preset with its step counts, locality and report rates (and the
        fast path's precision and tuning LPIPS size on the GPU)."""
        base = "paper" if settings.preset == "custom" else settings.preset

        def rates(steps: int) -> dict:
            return {"num_steps": steps, "preview_every": max(1, steps // PREVIEWS_PER_PHASE),
                    "report_every": max(1, steps // REPORTS_PER_PHASE)}

        config = preset(base, projection=rates(settings.projection_steps), tuning=rates(settings.tuning_steps),
                        locality={"enabled": settings.locality})
        return config if self._speed is None else apply_to_config(config, self._speed)

    @gpu_task(duration=ESTIMATE_GPU_SECONDS)
    def estimate_seconds(self, settings: InversionSettings) -> float:
        """Expected wall-clock seconds of an inversion with `settings` here (the first call times a few steps)."""
        pipeline = self._require_pipeline()
        self.prepare_pivot(settings.pivot)
        with self._speed_context():
            return float(pipeline.estimate_seconds(self.config_for(settings), pivot=settings.pivot))

    # ----- photo and alignment -----------------------------------------------------------------------------------

    def load_photo(self, source: bytes | str | Path | Image.Image) -> Image.Image:
        """Any uploaded image as an upright RGB image; bad input -> `alignment.ImageInputError` (readable)."""
        return alignment.load_image(source)

    def align(self, photo: Image.Image, face_index: int | None = None) -> Photo:
        """Find the faces in `photo` and FFHQ-align one (the most confident unless `face_index` is given)."""
        if self._landmarks_path is None:
            raise EditorUnavailableError(self._missing_message("alignment"))
        size = max(MIN_ALIGNED_SIZE, self.resolution or alignment.DEFAULT_OUTPUT_SIZE)
        aligned = alignment.align_face(photo, face_index=face_index, output_size=size,
                                       predictor_path=self._landmarks_path)
        return Photo(original=photo, aligned=aligned)

    # ----- inversion ---------------------------------------------------------------------------------------------

    @gpu_task(duration=_inversion_gpu_seconds)
    def invert(self, aligned_face: alignment.AlignedFace, settings: InversionSettings,
               progress_callback: Callable[[Progress], object] | None = None) -> Inversion:
        """PTI on an aligned face; `progress_callback` gets a `Progress` per step (truthy return -> `Cancelled`).

        The tuned generator comes back on the CPU, a new copy for every call.
        """
        return self._invert(aligned_face, settings, progress_callback)

    @gpu_task(duration=_inversion_gpu_seconds)
    def invert_steps(self, aligned_face: alignment.AlignedFace,
                     settings: InversionSettings) -> Iterator[Progress | Inversion]:
        """PTI in a worker thread: yields every step's `Progress`, then the `Inversion`.

        Closing the iterator early (a Stop button) cancels the run within one step and waits for it to end.
        On ZeroGPU the whole generator runs in the GPU worker and its items come back to the caller.
        """
        updates: queue.Queue = queue.Queue()
        stop = threading.Event()
        outcome: dict[str, object] = {}

        def report(progress: Progress) -> bool:
            updates.put(progress)
            return stop.is_set()

        def run() -> None:
            try:
                outcome["inversion"] = self._invert(aligned_face, settings, report)
            except BaseException as error:  # handed over to the consumer, which raises it
                outcome["error"] = error
            finally:
                updates.put(None)

        worker = threading.Thread(target=run, name="pti-invert", daemon=True)
        worker.start()
        try:
            while (item := updates.get()) is not None:
                yield item
        finally:
            stop.set()
            worker.join()
        if "error" in outcome:
            raise outcome["error"]
        yield outcome["inversion"]

    def _invert(self, aligned_face: alignment.AlignedFace, settings: InversionSettings,
                progress_callback: Callable[[Progress], object] | None) -> Inversion:
        """PTI through the pipeline (on the GPU: the fast path's settings); results on the CPU."""
        pipeline = self._require_pipeline()
        self.prepare_pivot(settings.pivot)
        start = time.perf_counter()
        with self._speed_context():
            result = pipeline.invert(aligned_face, config=self.config_for(settings), callback=progress_callback,
                                     seed=settings.seed, pivot=settings.pivot)
        identity = result.identities[0]
        return Inversion(
            tuned=result.tuned.to("cpu"),
            pivot=identity.pivot,
            pivot_render=Reconstruction(identity.pivot_original, identity.metrics_original.lpips,
                                        identity.metrics_original.mse),
            tuned_render=Reconstruction(identity.pivot_tuned, identity.metrics_tuned.lpips,
                                        identity.metrics_tuned.mse),
            settings=settings,
            seconds=time.perf_counter() - start,
        )

    def _speed_context(self) -> contextlib.AbstractContextManager:
        """The fast path's process-wide flags on the GPU (restored afterwards); nothing on the CPU."""
        return speed_context(self._speed) if self._speed is not None else contextlib.nullcontext()

    # ----- edits -------------------------------------------------------------------------------------------------

    def parse_edit(self, key: str, strength: float) -> Edit:
        """The edit `kind:name` (an option's key) at `strength`, checked against the edit library."""
        library = self._require_library()
        kind, _, name = str(key).partition(":")
        edit = Edit(kind, name, float(strength))
        library.validate(edit)
        return edit

    @gpu_task(duration=RENDER_GPU_SECONDS)
    def render_chain(self, session: EditingSession, edits: Sequence[Edit]) -> tuple[Image.Image, ...]:
        """Images of every step of `edits` on the session's pivot, by its tuned generator (the start first)."""
        chain = EditChain(self._require_library(), edits)
        generator = session.inversion.tuned.generator
        if self.device.type != "cpu":  # the session's own copy stays on the CPU; render from a device copy
            generator = copy.deepcopy(generator).to(self.device)
        force_fp32 = True if self._speed is None else self._speed.force_fp32
        with self._speed_context():
            return tuple(chain.render(generator, session.inversion.pivot.ws, force_fp32=force_fp32))

    def paste_back(self, photo: Photo, edited: Image.Image) -> Image.Image:
        """The original photo with the edited face pasted back where it was found."""
        return alignment.paste_back(photo.original, photo.aligned, edited)

    def chain_json(self, edits: Sequence[Edit]) -> str:
        """The edit chain as JSON (replayable with `EditChain.from_json`)."""
        return EditChain(self._require_library(), edits).to_json()

    def write_downloads(self, session: EditingSession, directory: str | Path, *,
                        pasted: Image.Image | None) -> Downloads:
        """Write the session's files into `directory`: aligned and final face, pasted photo, pivot, weights, chain."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        saved = session.inversion.tuned.save(directory)
        aligned_path, final_path = directory / "aligned.png", directory / "final.png"
        session.photo.aligned.image.save(aligned_path)
        session.final_image.save(final_path)
        chain_path = directory / "edit_chain.json"
        chain_path.write_text(self.chain_json(session.edits))
        pasted_path = directory / "pasted_back.png"
        if pasted is None:
            pasted_path.unlink(missing_ok=True)
        else:
            pasted.save(pasted_path)
        return Downloads(aligned=aligned_path, final=final_path, pivot=saved.pivots, tuned_weights=saved.weights,
                         chain=chain_path, pasted=pasted_path if pasted is not None else None)

    # ----- private loaders ---------------------------------------------------------------------------------------

    def _record_missing(self, key: str, needed_for: str, error: Exception) -> None:
        """Remember a missing file (and go on: the app still starts and shows it)."""
        self._missing.append(MissingFile(key=key, needed_for=needed_for, message=str(error)))

    def _missing_message(self, needed_for: str) -> str:
        """One message naming the missing files that `needed_for` needs."""
        keys = ", ".join(m.key for m in self._missing if m.needed_for == needed_for)
        return (f"{needed_for.capitalize()} is not available because pretrained files are missing ({keys}); "
                "the note at the top of the page says how to provide them.")

    def _require_pipeline(self) -> PTIPipeline:
        """The pipeline, or a clear error when the generator or LPIPS could not be loaded."""
        if self._pipeline is None:
            raise EditorUnavailableError(self._missing_message("inversion"))
        return self._pipeline

    def _require_library(self) -> EditLibrary:
        """The edit library, or a clear error when the generator could not be loaded."""
        if self._library is None:
            raise EditorUnavailableError(self._missing_message("inversion"))
        return self._library

    def _load_landmarks_path(self, landmarks_path: str | Path | None) -> Path | None:
        """The landmark model: the given file, else the registry's, else the copy in `face-recognition-models`."""
        if landmarks_path is not None:
            return Path(landmarks_path)
        try:
            return weights.resolve(LANDMARK_MODEL_KEY)
        except weights.WeightsError as error:
            spec = importlib.util.find_spec(LANDMARKS_PACKAGE)
            if spec is not None and spec.submodule_search_locations:
                copy_path = Path(next(iter(spec.submodule_search_locations))) / "models" / \
                    weights.REGISTRY[LANDMARK_MODEL_KEY].basename
                if copy_path.is_file():  # byte-identical; alignment checks its sha256 before loading it
                    return copy_path
            self._record_missing(LANDMARK_MODEL_KEY, "alignment", error)
            return None

    def _load_generator(self, model: str) -> torch.nn.Module | None:
        """The generator on the editor's device (None, and recorded, when its file is missing)."""
        try:
            return weights.load_generator(model, device=self.device)
        except weights.WeightsError as error:
            self._record_missing(model, "inversion", error)
            return None

    def _load_lpips_choice(self, requested: bool | None) -> bool:
        """Pretrained LPIPS backbones as requested; when not said: if both resolve (else random for 'tiny' only)."""
        if requested is not None:
            return requested
        for key in BACKBONE_WEIGHTS.values():
            try:
                weights.resolve(key)
            except weights.WeightsError as error:
                if self.is_tiny:
                    return False
                self._record_missing(key, "inversion", error)
        return True

    def _load_pipeline(self) -> PTIPipeline | None:
        """The PTI pipeline over the generator (None when the generator or LPIPS files are missing)."""
        if self._generator is None or any(m.needed_for == "inversion" for m in self._missing):
            return None
        try:
            generator = self._generator if self._speed is None else prepare_generator(self._generator, self._speed)
            return PTIPipeline(generator, device=self.device, lpips_pretrained=self.lpips_pretrained, e4e=self._e4e)
        except weights.WeightsError as error:
            self._record_missing("lpips", "inversion", error)
            return None

    def _load_library(self, mapper_dir: str | Path | None) -> EditLibrary | None:
        """The edits: seeded random demo edits for the tiny model, the real files (fetched on first use) otherwise."""
        if self._generator is None:
            return None
        if self.is_tiny:
            return demo_library(self._generator.w_dim, self._generator.num_ws)
        return EditLibrary.from_registry(mapper_dir=mapper_dir, device=self.device)
