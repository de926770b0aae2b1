"""The face editor behind the app: loads the models once; methods take and return images and plain values."""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib.util
import io
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

import alignment
from alignment.landmarks import LANDMARK_MODEL_KEY
from editing_directions.chain import EditChain, as_wplus
from editing_directions.edit import Edit
from editing_directions.library import EditLibrary, EditOption, demo_library
from pti import weights
from pti.config import PRESET_NAMES, PTIConfig, preset
from pti.e4e import E4E, E4ECheckpointError, E4EGeneratorMismatchError
from pti.fast_path import (APPROXIMATE_SETTINGS, FAST_SETTINGS, SpeedSettings, apply_to_config, prepare_generator,
                           speed_context)
from pti.images import tensor_to_pil
from pti.losses import BACKBONE_WEIGHTS
from pti.pipeline import PIVOT_METHODS, PTIPipeline
from pti.placements import FACES_FILENAME, write_placements
from pti.progress import Cancelled, Progress
from pti.projector import Pivot
from pti.serving import gpu_calls
from pti.serving.durations import MAX_SECONDS, Estimate, GpuDurations, InversionTimings
from pti.serving.zerogpu import gpu_call_device, on_zerogpu
from pti.tuning import TunedGenerator

DEFAULT_MODEL = "stylegan2-ffhq-1024"
TINY_MODEL = "tiny"
# Smallest side of the aligned face shown to people (the tiny model works at 32 px; its input is downscaled).
MIN_ALIGNED_SIZE = 256
# Previews per phase during an inversion (a preview costs a device -> host copy).
PREVIEWS_PER_PHASE = 12
# Loss reports per phase (each report syncs the device).
REPORTS_PER_PHASE = 100
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
    timings: InversionTimings  # its parts, as measured where it ran


@dataclass(frozen=True, eq=False)
class Photo:
    """A photo, kept encoded (a decoded 64-megapixel photo would take ~192 MB), and the face aligned from it."""

    encoded: bytes  # the image file as given (or a PNG of the image given)
    aligned: alignment.AlignedFace

    @property
    def original(self) -> Image.Image:
        """The photo, upright RGB (decoded on each call)."""
        return alignment.load_image(self.encoded)


@dataclass(frozen=True, eq=False)
class GroupPhoto:
    """A photo, kept encoded, and every usable face in it, numbered left to right (face k is `group.faces[k - 1]`)."""

    encoded: bytes
    group: alignment.GroupAlignment

    @property
    def original(self) -> Image.Image:
        """The photo, upright RGB (decoded on each call)."""
        return alignment.load_image(self.encoded)

    def face(self, index: int) -> Photo:
        """Face `index` (from 0) as a one-face `Photo` of the same encoded photo."""
        return Photo(encoded=self.encoded, aligned=self.group.faces[index])


@dataclass(frozen=True)
class InversionFiles:
    """Files of one inversion, written once (`FaceEditor.write_inversion_files`) and offered with every edit."""

    aligned: Path  # aligned face (PNG)
    pivot: Path  # pivot (.npy)
    tuned_weights: Path  # tuned generator (.safetensors)


@dataclass(frozen=True, eq=False)
class EditingSession:
    """Everything one session edits: the photo, its inversion, the edit chain and the rendering of every step."""

    photo: Photo
    inversion: Inversion
    edits: tuple[Edit, ...] = ()
    step_images: tuple[Image.Image, ...] = ()  # the start (PTI reconstruction), then one image per edit
    files: InversionFiles | None = None  # the inversion's files, once written

    @property
    def final_image(self) -> Image.Image:
        """The face after every edit (the reconstruction when there are none)."""
        return self.step_images[-1] if self.step_images else self.inversion.tuned_render.image


@dataclass(frozen=True, eq=False)
class GroupSession:
    """Every face of a group photo inverted together: one `EditingSession` per face, left to right, all sharing one
    tuned generator, each with its own edit chain."""

    photo: GroupPhoto
    faces: tuple[EditingSession, ...]
    files: GroupFiles | None = None  # the inversion's files, once written

    @property
    def tuned(self) -> TunedGenerator:
        """The generator tuned for every face."""
        return self.faces[0].inversion.tuned

    @property
    def seconds(self) -> float:
        """Wall-clock seconds of the group's inversion."""
        return self.faces[0].inversion.seconds


# What an app session holds: one face, or every face of a group photo.
Session = EditingSession | GroupSession


@dataclass(frozen=True)
class GroupFiles:
    """Files of a group's inversion, written once (`FaceEditor.write_group_inversion_files`)."""

    photo: Path  # the photo as given
    faces_preview: Path  # the photo with each face's box and number (PNG)
    placements: Path  # where each face sits (faces.json, for `python -m pti edit --paste-back`)
    aligned: tuple[Path, ...]  # aligned face of each face (PNG)
    pivots: Path  # every face's pivot (pivots.npz)
    tuned_weights: Path  # the generator tuned for every face (.safetensors)


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


@dataclass(frozen=True)
class GroupDownloads:
    """Files written for a group session, for people to download: each file, and all but the weights in one zip."""

    pasted: Path | None  # every edited face pasted back into the photo (PNG), when asked for
    finals: tuple[Path, ...]  # final edited face of each face (PNG)
    chains: tuple[Path, ...]  # edit chain of each face (JSON)
    files: GroupFiles
    archive: Path  # every file above and in `files` but the tuned weights, in one zip

    @property
    def paths(self) -> list[Path]:
        """Every file, in display order (the zip first)."""
        files = self.files
        return [path for path in (self.archive, self.pasted, *self.finals, files.faces_preview, *files.aligned,
                                  *self.chains, files.pivots, files.tuned_weights, files.placements, files.photo)
                if path is not None]


def _image_suffix(encoded: bytes) -> str:
    """The file suffix of an encoded image ('.jpg', '.png', ...)."""
    with Image.open(io.BytesIO(encoded)) as image:
        kind = (image.format or "png").lower()
    return ".jpg" if kind == "jpeg" else f".{kind}"


def _png_bytes(image: Image.Image) -> bytes:
    """`image` as a PNG file (fast, lossless compression)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _stacked_offsets(offsets: Sequence[list[torch.Tensor] | None],
                     counts: Sequence[int]) -> tuple[np.ndarray, ...] | None:
    """The StyleSpace offsets of several chains' steps stacked per layer (zeros for a chain without text edits), as
    numpy arrays for a GPU call; None when no chain has any."""
    shapes = next((chain for chain in offsets if chain is not None), None)
    if shapes is None:
        return None
    layers = [[torch.zeros(count, layer.shape[1]) for layer in shapes] if chain is None else chain
              for chain, count in zip(offsets, counts)]
    return tuple(torch.cat(per_layer).numpy() for per_layer in zip(*layers))


class FaceEditor:
    """Loads the generator, landmark model, LPIPS and edits once; aligns, inverts (PTI), edits and pastes back.

    Inversions and renders run in the GPU functions of `pti.serving.gpu_calls`. On ZeroGPU the models are held on the
    CPU in this process and each GPU function computes on the GPU its worker was given; elsewhere everything stays
    on `device`.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,  # registry generator name, 'tiny', or a path to a .pkl / .safetensors file
        *,
        device: torch.device | str = "cpu",  # where inversion and rendering run
        landmarks_path: str | Path | None = None,  # dlib 68-landmark model; None: the registry (or its PyPI copy)
        lpips_pretrained: bool | None = None,  # None: pretrained when its files are available (random for 'tiny')
        mapper_dir: str | Path | None = None,  # folder of extra StyleCLIP mapper files (*.pt)
        e4e: E4E | str | Path | None = None,  # e4e encoder or checkpoint; None: the registry's, if it fits the model
        gpu_max_seconds: int = MAX_SECONDS,  # on ZeroGPU: the longest call asked for (longer settings are refused)
        approximate: bool = False,  # on a GPU: fp16 layers and 256 px tuning LPIPS (faster; not the paper's method)
    ) -> None:
        self.model_name = model
        self.approximate = approximate
        self._e4e = e4e
        self.zerogpu = on_zerogpu()  # a ZeroGPU Space: models on the CPU here, GPU work in its worker
        self.device = torch.device("cpu") if self.zerogpu else torch.device(device)  # where the models are held
        # The measured times of GPU calls: what to ask ZeroGPU for, and the estimate there.
        self.durations = GpuDurations(max_seconds=gpu_max_seconds)
        self._missing: list[MissingFile] = []
        self._landmarks_path = self._load_landmarks_path(landmarks_path)
        self._generator = self._load_generator(model)
        self.lpips_pretrained = self._load_lpips_choice(lpips_pretrained)
        self._pipeline = self._load_pipeline()
        self._library = self._load_library(mapper_dir)
        self._key = gpu_calls.register(self)  # how the GPU functions (maybe in a forked worker) find this editor

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
    def runs_on_cpu(self) -> bool:
        """Whether inversions run on the CPU here (not on a GPU, nor on ZeroGPU)."""
        return self.device.type == "cpu" and not self.zerogpu

    @property
    def hardware(self) -> str:
        """Where the GPU work runs, for people: 'CPU', 'CUDA' or 'ZeroGPU'."""
        return "ZeroGPU" if self.zerogpu else self.device.type.upper()

    @property
    def default_pivot(self) -> str:
        """The pivot to preselect: e4e on a CPU where it is offered (one pass instead of minutes), else 'w'."""
        return "e4e" if "e4e" in self.pivot_choices and self.runs_on_cpu else "w"

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
        if self.runs_on_cpu and self.can_invert and not self.is_tiny:
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

    def speed_for(self, device: torch.device) -> SpeedSettings | None:
        """The speed switches for computing on `device`: the fast path on a GPU (approximate if the editor was made
        so; with the reference ops on ZeroGPU, which has no nvcc), None (the plain configuration) on the CPU."""
        if device.type != "cuda":
            return None
        settings = APPROXIMATE_SETTINGS if self.approximate else FAST_SETTINGS
        return dataclasses.replace(settings, ops_impl="ref") if self.zerogpu else settings

    def config_for(self, settings: InversionSettings, device: torch.device | None = None) -> PTIConfig:
        """The PTI configuration of `settings`: the preset with its step counts, locality and report rates (and the
        speed settings' precision and tuning LPIPS size when computing on a GPU; `device` defaults to the editor's)."""
        base = "paper" if settings.preset == "custom" else settings.preset

        def rates(steps: int) -> dict:
            return {"num_steps": steps, "preview_every": max(1, steps // PREVIEWS_PER_PHASE),
                    "report_every": max(1, steps // REPORTS_PER_PHASE)}

        config = preset(base, projection=rates(settings.projection_steps), tuning=rates(settings.tuning_steps),
                        locality={"enabled": settings.locality})
        speed = self.speed_for(self.device if device is None else device)
        return config if speed is None else apply_to_config(config, speed)

    def estimate(self, settings: InversionSettings, *, faces: int = 1) -> Estimate:
        """Expected wall-clock seconds of an inversion of `faces` faces with `settings` here. On ZeroGPU from the last
        measured GPU call (a stated prior before the first), costing no GPU time; elsewhere the first call times a
        few steps."""
        pipeline = self._require_pipeline()
        self.prepare_pivot(settings.pivot)
        if self.zerogpu:
            return self._gpu_estimate(settings, faces)
        with self._speed_context(self.device):
            seconds = pipeline.estimate_seconds(self.config_for(settings), num_identities=faces, pivot=settings.pivot)
        return Estimate(float(seconds), measured=True)

    def estimate_seconds(self, settings: InversionSettings) -> float:
        """Expected wall-clock seconds of an inversion with `settings` here (see `estimate`)."""
        return self.estimate(settings).seconds

    def gpu_seconds(self, settings: InversionSettings, *, faces: int = 1) -> int:
        """Seconds of GPU time to ask ZeroGPU for an inversion of `faces` faces with `settings` (measured times with
        a margin)."""
        return self.durations.requested(self._gpu_estimate(settings, faces))

    def _gpu_estimate(self, settings: InversionSettings, faces: int) -> Estimate:
        """Expected seconds of a GPU call inverting `faces` faces with `settings`, from the measured durations."""
        return self.durations.inversion(projection_steps=settings.projection_steps, tuning_steps=settings.tuning_steps,
                                        locality=settings.locality, pivot=settings.pivot, faces=faces)

    def render_gpu_seconds(self, images: int) -> int:
        """Seconds of GPU time to ask ZeroGPU for rendering `images` images of an edit chain."""
        return self.durations.requested(self.durations.render(images))

    # ----- photo and alignment -----------------------------------------------------------------------------------

    def load_photo(self, source: bytes | str | Path | Image.Image) -> Image.Image:
        """Any uploaded image as an upright RGB image; bad input -> `alignment.ImageInputError` (readable)."""
        return alignment.load_image(source)

    def align(self, photo: Image.Image | bytes, face_index: int | None = None) -> Photo:
        """Find the faces in `photo` (an image, or an image file's bytes, kept as they are) and FFHQ-align one (the
        most confident unless `face_index` is given)."""
        if self._landmarks_path is None:
            raise EditorUnavailableError(self._missing_message("alignment"))
        picture = self.load_photo(photo) if isinstance(photo, bytes) else photo
        size = max(MIN_ALIGNED_SIZE, self.resolution or alignment.DEFAULT_OUTPUT_SIZE)
        aligned = alignment.align_face(picture, face_index=face_index, output_size=size,
                                       predictor_path=self._landmarks_path)
        return Photo(encoded=photo if isinstance(photo, bytes) else _png_bytes(picture), aligned=aligned)

    def align_group(self, photo: Photo | bytes, *, max_faces: int = alignment.DEFAULT_MAX_FACES) -> GroupPhoto:
        """Every usable face of `photo` (a `Photo` from `align`, or an image file's bytes), each FFHQ-aligned as
        `align` would, numbered left to right; faces too small, cut off or over `max_faces` are listed as skipped."""
        if self._landmarks_path is None:
            raise EditorUnavailableError(self._missing_message("alignment"))
        encoded = photo.encoded if isinstance(photo, Photo) else photo
        size = max(MIN_ALIGNED_SIZE, self.resolution or alignment.DEFAULT_OUTPUT_SIZE)
        group = alignment.align_faces(self.load_photo(encoded), output_size=size, max_faces=max_faces,
                                      predictor_path=self._landmarks_path)
        return GroupPhoto(encoded=encoded, group=group)

    def faces_preview(self, photo: GroupPhoto) -> Image.Image:
        """The photo with each face's box and number (skipped ones grey), at most 1024 px."""
        return alignment.draw_faces(photo.original, photo.group)

    # ----- inversion ---------------------------------------------------------------------------------------------

    def invert(self, aligned_face: alignment.AlignedFace, settings: InversionSettings,
               progress_callback: Callable[[Progress], object] | None = None) -> Inversion:
        """PTI on an aligned face; `progress_callback` gets a `Progress` per step (truthy return -> `Cancelled`).

        The tuned generator comes back on the CPU, a new copy for every call.
        """
        steps = self.invert_steps(aligned_face, settings)
        with contextlib.closing(steps):
            for item in steps:
                if not isinstance(item, Progress):
                    return item
                if progress_callback is not None and progress_callback(item):
                    raise Cancelled(item.phase, item.step, item.total)
        raise gpu_calls.GpuCallError("the inversion ended without a result")

    def invert_steps(self, aligned_face: alignment.AlignedFace,
                     settings: InversionSettings) -> Iterator[Progress | Inversion]:
        """PTI in a GPU function: yields every step's `Progress`, then the `Inversion` (tuned generator on the CPU).

        Closing the iterator early (a Stop button) cancels the run within one step and waits for it to end. On
        ZeroGPU, settings that need more GPU time than one call may take are refused before the call.
        """
        for item in self._inversion_steps((aligned_face,), settings):
            yield item[0] if isinstance(item, tuple) else item

    def invert_group_steps(self, photo: GroupPhoto, settings: InversionSettings) -> Iterator[Progress | GroupSession]:
        """Multi-ID PTI of every face of a group photo in one GPU function: yields every step's `Progress` (its
        `identity` says which face a projection step or tuning update is for), then the `GroupSession` (one tuned
        generator on the CPU, a pivot per face, no edits). Closing the iterator early cancels the run, as
        `invert_steps`."""
        for item in self._inversion_steps(photo.group.faces, settings):
            if isinstance(item, tuple):
                item = GroupSession(photo=photo, faces=tuple(
                    EditingSession(photo=photo.face(index), inversion=inversion,
                                   step_images=(inversion.tuned_render.image,))
                    for index, inversion in enumerate(item)))
            yield item

    def _inversion_steps(self, faces: Sequence[alignment.AlignedFace],
                         settings: InversionSettings) -> Iterator[Progress | tuple[Inversion, ...]]:
        """PTI of `faces` in a GPU function: every step's `Progress`, then one `Inversion` per face; measured."""
        faces = tuple(faces)
        if self.zerogpu:
            self._check_fits_a_call(settings, len(faces))
        for item in gpu_calls.checked_steps(gpu_calls.invert_steps(self._key, faces, settings)):
            if isinstance(item, tuple):
                self.durations.record_inversion(item[0].timings)
            yield item

    def _check_fits_a_call(self, settings: InversionSettings, faces: int) -> None:
        """Refuse settings whose expected GPU time (with the margin) is over the longest call ZeroGPU allows."""
        needed = self.durations.wanted(self.estimate(settings, faces=faces))
        if needed > self.durations.max_seconds:
            several = f" for {faces} faces" if faces > 1 else ""
            raise SettingsError(f"these settings need about {needed} s of GPU time{several}, more than one ZeroGPU "
                                f"call may take ({self.durations.max_seconds} s): use fewer steps or the e4e pivot"
                                + (", or invert fewer faces" if faces > 1 else ""))

    def run_inversion(self, aligned_face: alignment.AlignedFace, settings: InversionSettings,
                      progress_callback: Callable[[Progress], object] | None) -> Inversion:
        """PTI on the device of this GPU call (the fast path's settings on a GPU), measured; results on the CPU.

        Called inside a GPU function (`pti.serving.gpu_calls`); use `invert` or `invert_steps` from elsewhere.
        """
        return self.run_inversions((aligned_face,), settings, progress_callback)[0]

    def run_inversions(self, faces: Sequence[alignment.AlignedFace], settings: InversionSettings,
                       progress_callback: Callable[[Progress], object] | None) -> tuple[Inversion, ...]:
        """Multi-ID PTI of `faces` (one generator tuned for all) on the device of this GPU call, measured; one
        `Inversion` per face, sharing the tuned generator (on the CPU). One face: PTI as the paper's.

        Called inside a GPU function (`pti.serving.gpu_calls`); use `invert_steps` / `invert_group_steps` elsewhere.
        """
        for face in faces:
            if not isinstance(face, alignment.AlignedFace):
                raise TypeError(f"invert needs an AlignedFace (from FaceEditor.align), got {type(face).__name__}")
        if not faces:
            raise ValueError("invert needs at least one aligned face")
        start = time.perf_counter()
        # The last report of each projection (one per face) and of the tuning: their steps and their seconds.
        last_reports: dict[tuple[str, int | None], Progress] = {}

        def report(progress: Progress) -> object:
            last_reports[progress.phase, progress.identity if progress.phase == "projection" else None] = progress
            return progress_callback(progress) if progress_callback is not None else None

        self.prepare_pivot(settings.pivot)
        device = gpu_call_device(self.device)
        pipeline = self._require_pipeline().on_device(device)
        with self._speed_context(device):
            result = pipeline.invert_many(list(faces), config=self.config_for(settings, device), callback=report,
                                          seed=settings.seed, pivot=settings.pivot)
        tuned = result.tuned.to("cpu")
        seconds = time.perf_counter() - start
        projections = [progress for (phase, _), progress in last_reports.items() if phase == "projection"]
        pivot_seconds = sum(progress.elapsed_s for progress in projections)
        tuning = last_reports["tuning", None]
        timings = InversionTimings(
            setup=max(0.0, seconds - pivot_seconds - tuning.elapsed_s), pivot=pivot_seconds,
            projection_steps=sum(progress.step for progress in projections) if settings.pivot == "w" else 0,
            tuning=tuning.elapsed_s, tuning_steps=tuning.step, locality=settings.locality)
        return tuple(
            Inversion(
                tuned=tuned,
                pivot=identity.pivot,
                pivot_render=Reconstruction(identity.pivot_original, identity.metrics_original.lpips,
                                            identity.metrics_original.mse),
                tuned_render=Reconstruction(identity.pivot_tuned, identity.metrics_tuned.lpips,
                                            identity.metrics_tuned.mse),
                settings=settings,
                seconds=seconds,
                timings=timings,
            )
            for identity in result.identities)

    def _speed_context(self, device: torch.device) -> contextlib.AbstractContextManager:
        """The fast path's process-wide flags when computing on a GPU (restored afterwards); nothing on the CPU."""
        speed = self.speed_for(device)
        return speed_context(speed) if speed is not None else contextlib.nullcontext()

    # ----- edits -------------------------------------------------------------------------------------------------

    def parse_edit(self, key: str, strength: float) -> Edit:
        """The edit `kind:name` (an option's key) at `strength`, checked against the edit library."""
        library = self._require_library()
        kind, _, name = str(key).partition(":")
        edit = Edit(kind, name, float(strength))
        library.validate(edit)
        return edit

    @property
    def offers_text_edits(self) -> bool:
        """Whether edits typed as sentences (StyleCLIP global directions) are offered."""
        return self._library is not None and self._library.offers_text

    def text_edit(self, neutral: str, target: str, alpha: float, beta: float) -> Edit:
        """A text edit from the two sentences, checked (sentences, alpha and beta ranges, CLIP's token limit)."""
        edit = Edit.text(target, float(alpha), neutral=neutral, beta=float(beta))
        self._require_library().validate(edit)
        return edit

    def prepare_text_edits(self) -> None:
        """Fetch and load what text edits need (fs3, CLIP, the std of s, computed once per generator) now, e.g. in a
        background thread at start, so that the first text edit does not wait for them."""
        self._require_library().prepare_text()

    def text_channels(self, edit: Edit) -> int:
        """How many style channels a text edit moves (encodes its sentences with CLIP on first use)."""
        return self._require_library().text_direction(edit).channels

    def render_chain(self, session: EditingSession, edits: Sequence[Edit]) -> tuple[Image.Image, ...]:
        """Images of every step of `edits` on the session's pivot, by its tuned generator (the start first).

        The edits are applied to the codes here (fetching an edit's file on its first use; CLIP encodes the
        sentences of text edits here too); only the rendering runs in a GPU function, given plain tensors.
        """
        return self._render_chains(session.inversion.tuned.generator, [(session.inversion.pivot, edits)])[0]

    def render_group(self, session: GroupSession,
                     chains: Mapping[int, Sequence[Edit]]) -> dict[int, tuple[Image.Image, ...]]:
        """Images of every step of some faces' chains (`chains[k]` on the pivot of face k, from 0; the start first)
        by the group's tuned generator, all in one batched GPU call."""
        if any(not 0 <= index < len(session.faces) for index in chains):
            raise ValueError(f"faces are numbered 0 to {len(session.faces) - 1}, got {sorted(chains)}")
        pivots_and_edits = [(session.faces[index].inversion.pivot, edits) for index, edits in chains.items()]
        rendered = self._render_chains(session.tuned.generator, pivots_and_edits)
        return dict(zip(chains, rendered))

    def _render_chains(self, generator: torch.nn.Module,
                       chains: Sequence[tuple[Pivot, Sequence[Edit]]]) -> tuple[tuple[Image.Image, ...], ...]:
        """Every step of each (pivot, edits) chain in one GPU call (none for no chains); the images of each chain,
        start first."""
        if not chains:
            return ()
        library = self._require_library()
        codes: list[torch.Tensor] = []
        offsets: list[list[torch.Tensor] | None] = []
        counts: list[int] = []
        for pivot, edits in chains:
            chain = EditChain(library, edits)
            steps = chain.steps(as_wplus(pivot.ws.to(self.device, torch.float32), generator.num_ws))
            codes += steps
            counts.append(len(steps))
            offsets.append(chain.style_steps())
        style = _stacked_offsets(offsets, counts)
        rendered = gpu_calls.checked(gpu_calls.render_codes(self._key, generator, torch.cat(codes), style))
        self.durations.record_render(rendered.seconds, len(rendered.images))
        images = iter(rendered.images)
        return tuple(tuple(next(images) for _ in range(count)) for count in counts)

    def run_render(self, generator: torch.nn.Module, codes: torch.Tensor,
                   style_offsets: Sequence[np.ndarray] | None = None) -> gpu_calls.RenderedImages:
        """Images of W+ `codes` by `generator` on the device of this GPU call (the generator is not changed), timed;
        `style_offsets` (one (N, C) tensor per conv layer) are added to the styles.

        Called inside a GPU function (`pti.serving.gpu_calls`); use `render_chain` from elsewhere.
        """
        start = time.perf_counter()
        device = gpu_call_device(self.device)
        if next(generator.parameters()).device != device:  # the session's own copy stays where it is
            generator = copy.deepcopy(generator).to(device)
        speed = self.speed_for(device)
        with self._speed_context(device), torch.no_grad():
            offsets = None if style_offsets is None else [torch.as_tensor(offset, device=device)
                                                          for offset in style_offsets]
            images = generator.synthesis(codes.to(device, torch.float32), noise_mode="const",
                                         force_fp32=True if speed is None else speed.force_fp32,
                                         style_offsets=offsets)
        return gpu_calls.RenderedImages(tuple(tensor_to_pil(images)), time.perf_counter() - start)

    def paste_back(self, photo: Photo, edited: Image.Image) -> Image.Image:
        """The original photo with the edited face pasted back where it was found."""
        return alignment.paste_back(photo.original, photo.aligned, edited)

    def paste_back_group(self, session: GroupSession, faces: Sequence[Image.Image]) -> Image.Image:
        """The original photo with each face's image (`faces[k]` for face k) pasted back where it was found, nearer
        faces on top, none painting over another's face."""
        return alignment.paste_back_faces(session.photo.original, [face.photo.aligned for face in session.faces],
                                          faces)

    def chain_json(self, edits: Sequence[Edit]) -> str:
        """The edit chain as JSON (replayable with `EditChain.from_json`)."""
        return EditChain(self._require_library(), edits).to_json()

    def write_inversion_files(self, session: EditingSession, directory: str | Path) -> InversionFiles:
        """Write what stays the same for every edit of an inversion into `directory`: aligned face, pivot, weights."""
        directory = Path(directory)
        saved = session.inversion.tuned.save(directory)
        aligned_path = directory / "aligned.png"
        session.photo.aligned.image.save(aligned_path)
        return InversionFiles(aligned=aligned_path, pivot=saved.pivots, tuned_weights=saved.weights)

    def write_downloads(self, session: EditingSession, directory: str | Path, *,
                        pasted: Image.Image | None) -> Downloads:
        """Write what changes with the edits into `directory` (final face, pasted photo, chain); with the session's
        inversion files (`write_inversion_files`), every file to download."""
        if session.files is None:
            raise ValueError("write the inversion's files first (write_inversion_files)")
        directory = Path(directory)
        final_path, chain_path = directory / "final.png", directory / "edit_chain.json"
        session.final_image.save(final_path)
        chain_path.write_text(self.chain_json(session.edits))
        pasted_path = None if pasted is None else directory / "pasted_back.png"
        if pasted is not None:
            pasted.save(pasted_path)
        files = session.files
        return Downloads(aligned=files.aligned, final=final_path, pivot=files.pivot, tuned_weights=files.tuned_weights,
                         chain=chain_path, pasted=pasted_path)

    def write_group_inversion_files(self, session: GroupSession, directory: str | Path) -> GroupFiles:
        """Write what stays the same for every edit of a group's inversion into `directory`: the photo, the numbered
        preview, faces.json, each aligned face, the pivots and the tuned weights."""
        directory = Path(directory)
        saved = session.tuned.save(directory)
        photo_path = directory / f"photo{_image_suffix(session.photo.encoded)}"
        photo_path.write_bytes(session.photo.encoded)
        preview_path = directory / "faces.png"
        self.faces_preview(session.photo).save(preview_path)
        placements = directory / FACES_FILENAME
        write_placements(placements, photo_path.name, session.photo.group.faces)
        aligned = []
        for number, face in enumerate(session.faces, start=1):
            aligned.append(directory / f"face_{number}_aligned.png")
            face.photo.aligned.image.save(aligned[-1])
        return GroupFiles(photo=photo_path, faces_preview=preview_path, placements=placements, aligned=tuple(aligned),
                          pivots=saved.pivots, tuned_weights=saved.weights)

    def write_group_downloads(self, session: GroupSession, directory: str | Path, *,
                              pasted: Image.Image | None) -> GroupDownloads:
        """Write what changes with the edits into `directory` (each face's final image and chain, the pasted photo)
        and a zip of every file but the tuned weights (offered on their own: the same file after every edit)."""
        if session.files is None:
            raise ValueError("write the group's inversion files first (write_group_inversion_files)")
        directory = Path(directory)
        finals, chains = [], []
        for number, face in enumerate(session.faces, start=1):
            finals.append(directory / f"face_{number}_final.png")
            face.final_image.save(finals[-1])
            chains.append(directory / f"face_{number}_edit_chain.json")
            chains[-1].write_text(self.chain_json(face.edits))
        pasted_path = None if pasted is None else directory / "pasted_back.png"
        if pasted is not None:
            pasted.save(pasted_path)
        files = session.files
        archive = directory / "group.zip"
        with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as bundle:
            for path in (files.photo, files.faces_preview, files.placements, *files.aligned, files.pivots, *finals,
                         *chains, *([pasted_path] if pasted_path is not None else [])):
                bundle.write(path, path.name)
        return GroupDownloads(pasted=pasted_path, finals=tuple(finals), chains=tuple(chains), files=files,
                              archive=archive)

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
            speed = self.speed_for(self.device)
            generator = self._generator if speed is None else prepare_generator(self._generator, speed)
            return PTIPipeline(generator, device=self.device, lpips_pretrained=self.lpips_pretrained, e4e=self._e4e)
        except weights.WeightsError as error:
            self._record_missing("lpips", "inversion", error)
            return None

    def _load_library(self, mapper_dir: str | Path | None) -> EditLibrary | None:
        """The edits: seeded random demo edits for the tiny model, the real files (fetched on first use) otherwise."""
        if self._generator is None:
            return None
        if self.is_tiny:
            return demo_library(self._generator.w_dim, self._generator.num_ws, generator=self._generator)
        return EditLibrary.from_registry(mapper_dir=mapper_dir, device=self.device, generator=self._generator)
