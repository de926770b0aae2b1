"""PTI end to end: photo -> FFHQ alignment -> pivot -> pivotal tuning -> reconstructions and metrics."""
from __future__ import annotations

import copy
import dataclasses
import os
import statistics
import time
from dataclasses import dataclass
from typing import Sequence, Union

import torch
from PIL import Image

from alignment import (DEFAULT_MAX_FACES, MIN_GROUP_FACE_SIZE, AlignedFace, GroupAlignment, align_face, align_faces,
                       load_image)
from pti.config import PTIConfig, ProjectionConfig, TuningConfig, preset
from pti.e4e import E4E, e4e_input_tensor, load_e4e
from pti.images import pil_to_tensor, tensor_to_pil
from pti.losses import build_lpips
from pti.metrics import IdentityModel, ReconstructionMetrics, reconstruction_metrics
from pti.progress import Progress, ProgressCallback, ProgressReporter
from pti.projector import Pivot, project_w
from pti.tuning import TunedGenerator, canonical_device, pivotal_tune

# Ways to find the pivot: the paper's W projection (the default), or the e4e encoder's W+ code (one forward pass).
PIVOT_METHODS: tuple[str, ...] = ("w", "e4e")
ImageInput = Union[str, os.PathLike, Image.Image, AlignedFace]
E4ESource = Union[E4E, str, os.PathLike, None]


@dataclass(frozen=True, eq=False)
class IdentityReconstruction:
    """One identity's inputs and results: its aligned face, target, pivot, both reconstructions and their metrics."""

    aligned: AlignedFace | None  # None when the image was used as given (align=False)
    target: torch.Tensor  # (1, 3, R, R) in [-1, 1], CPU: the aligned face at the generator's resolution
    pivot: Pivot
    pivot_original: Image.Image  # the pivot rendered by the original generator ("W projection")
    pivot_tuned: Image.Image  # the pivot rendered by the tuned generator ("PTI")
    metrics_original: ReconstructionMetrics
    metrics_tuned: ReconstructionMetrics


@dataclass(frozen=True, eq=False)
class InversionResult:
    """The result of `PTIPipeline.invert` (one identity) or `invert_many` (several, one tuned generator)."""

    identities: tuple[IdentityReconstruction, ...]
    tuned: TunedGenerator
    projection_s: float  # wall time of finding the pivot(s): the W projection, or the e4e encoding (load excluded)
    tuning_s: float  # wall time of the tuning
    pivot_method: str = "w"  # how the pivots were found: "w" (W projection) or "e4e" (encoder)

    def _single(self) -> IdentityReconstruction:
        if len(self.identities) != 1:
            raise ValueError(f"this result holds {len(self.identities)} identities; read them from .identities")
        return self.identities[0]

    @property
    def pivot(self) -> Pivot:
        """The pivot of a single-identity result."""
        return self._single().pivot

    @property
    def aligned(self) -> AlignedFace | None:
        """The aligned face of a single-identity result."""
        return self._single().aligned

    @property
    def pivot_original(self) -> Image.Image:
        """The original generator's rendering of the pivot (single-identity result)."""
        return self._single().pivot_original

    @property
    def pivot_tuned(self) -> Image.Image:
        """The tuned generator's rendering of the pivot (single-identity result)."""
        return self._single().pivot_tuned


@dataclass(frozen=True, eq=False)
class GroupInversion:
    """Every usable face of one photo inverted together: one tuned generator, one pivot per face, left to right
    (`result.identities[k]` is face k + 1 of the numbered preview `alignment.draw_faces(photo, group)`)."""

    group: GroupAlignment  # the aligned faces and the skipped ones with their reasons
    result: InversionResult


@dataclass(frozen=True)
class StepTimes:
    """Measured seconds per step on this pipeline's device (see `PTIPipeline.estimate_seconds`)."""

    projection_setup: float  # per projection run, outside the steps (W statistics, copies)
    projection_step: float
    tuning_setup: float  # per tuning run, outside the steps
    tuning_step: float  # one identity, no regulariser
    locality_extra: float  # added by one regularised sample


def _for_identity(callback: ProgressCallback | None, identity: int) -> ProgressCallback | None:
    """`callback` getting every report marked as one of identity `identity` (its projection, among several)."""
    if callback is None:
        return None
    return lambda progress: callback(dataclasses.replace(progress, identity=identity))


def _median_step(progress: list[Progress]) -> float:
    return statistics.median(b.elapsed_s - a.elapsed_s for a, b in zip(progress, progress[1:]))


class PTIPipeline:
    """Owns a generator and the two LPIPS networks (built once) and runs PTI on photos."""

    def __init__(self, generator: str | os.PathLike | torch.nn.Module = "stylegan2-ffhq-1024", *,
                 device: torch.device | str = "cpu", config: PTIConfig | None = None, lpips_pretrained: bool = True,
                 predictor_path: str | os.PathLike | None = None,
                 identity_model_path: str | os.PathLike | None = None, e4e: E4ESource = None) -> None:
        """Load the generator (registry name, file, or a Generator module) and LPIPS-VGG/AlexNet on `device`.

        `lpips_pretrained=False` uses random LPIPS backbones (tests only). `predictor_path`: dlib 68-landmark
        model for alignment (default: the registry). `identity_model_path`: dlib face-recognition model; when
        given, metrics include the identity distance. `e4e`: the encoder for e4e pivots, an `E4E` or a checkpoint
        file; None: the registry's "e4e-ffhq-encode". Either way it is loaded only when an e4e pivot is asked for.
        """
        self.device = canonical_device(device)
        if isinstance(generator, torch.nn.Module):
            on_device = next(generator.parameters()).device == self.device
            G = generator if on_device else copy.deepcopy(generator).to(self.device)
        else:
            from pti.weights import load_generator

            G = load_generator(generator, device=self.device)
        self.generator = G.eval().requires_grad_(False)
        self.config = config or preset("paper")
        self.lpips_vgg = build_lpips("vgg", pretrained=lpips_pretrained, device=self.device)
        self.lpips_alex = build_lpips("alex", pretrained=lpips_pretrained, device=self.device)
        self.predictor_path = predictor_path
        self.identity = IdentityModel(identity_model_path, predictor_path) if identity_model_path else None
        self._e4e_source = e4e
        self._e4e: E4E | None = None
        self._step_times: StepTimes | None = None
        self._e4e_seconds: float | None = None

    @property
    def resolution(self) -> int:
        """Side of the generator's images in pixels."""
        return self.generator.img_resolution

    def on_device(self, device: torch.device | str) -> PTIPipeline:
        """This pipeline on `device`: itself when it is there, else a copy whose networks (the generator, both LPIPS
        and a loaded e4e encoder) are copied to `device`; this pipeline is left as it is."""
        device = canonical_device(device)
        if device == self.device:
            return self
        moved = copy.copy(self)
        moved.device = device
        moved.generator = copy.deepcopy(self.generator).to(device)
        moved.lpips_vgg = copy.deepcopy(self.lpips_vgg).to(device)
        moved.lpips_alex = copy.deepcopy(self.lpips_alex).to(device)
        moved._e4e = None if self._e4e is None else E4E(copy.deepcopy(self._e4e.encoder),
                                                         self._e4e.latent_avg).to(device)
        moved._step_times = None
        moved._e4e_seconds = None
        return moved

    def prepare(self, image: ImageInput, *, face_index: int | None = None,
                align: bool = True) -> tuple[AlignedFace | None, torch.Tensor]:
        """(aligned face or None, (1, 3, R, R) target): FFHQ-aligns a photo unless `align` is False."""
        if isinstance(image, AlignedFace):
            aligned, picture = image, image.image
        elif align:
            aligned = align_face(image, face_index=face_index, predictor_path=self.predictor_path)
            picture = aligned.image
        else:
            aligned, picture = None, load_image(image)
        return aligned, pil_to_tensor(picture, size=self.resolution)

    def load_e4e(self) -> E4E:
        """The e4e encoder on this pipeline's device, loaded on the first call and checked against the generator.

        Raises `E4EGeneratorMismatchError` when its W+ codes are not (num_ws, w_dim) of the generator, and the
        loader's errors (`WeightsError`, `E4ECheckpointError`, `FileNotFoundError`) when it cannot be read; a
        failed load is not remembered, so a later call tries again.
        """
        if self._e4e is None:
            source = self._e4e_source
            e4e = source if isinstance(source, E4E) else load_e4e(source, device=self.device)
            e4e.check_fits(self.generator.num_ws, self.generator.w_dim)
            self._e4e = e4e.to(self.device)
        return self._e4e

    def find_pivot(self, target: torch.Tensor, *, method: str = "w", config: ProjectionConfig | None = None,
                   callback: ProgressCallback | None = None, seed: int = 0,
                   face: Image.Image | None = None) -> Pivot:
        """The pivot of one (1, 3, R, R) target by `method`: 'w' (the paper's W projection) or 'e4e' (encoder).

        The e4e encoder reads `face` (the aligned face at its own size; default: the target) and reports as one
        "projection" step, with the pivot's rendering as preview when `config` asks for previews; `seed` and the
        step settings of `config` are for the projection only.
        """
        if method not in PIVOT_METHODS:
            raise ValueError(f"unknown pivot method {method!r}; available: {list(PIVOT_METHODS)}")
        config = config or self.config.projection
        if method == "e4e":
            return self._e4e_pivot(target, face, callback, previews=config.preview_every > 0)
        return project_w(self.generator, target, config, device=self.device, seed=seed, callback=callback,
                         lpips=self.lpips_vgg)

    def _e4e_pivot(self, target: torch.Tensor, face: Image.Image | None, callback: ProgressCallback | None, *,
                   previews: bool) -> Pivot:
        """One e4e forward pass -> W+ pivot; the callback gets one step (with the pivot's rendering if `previews`)."""
        return self._e4e_pivots([face if face is not None else tensor_to_pil(target)[0]], callback,
                                previews=previews)[0]

    def _e4e_pivots(self, faces: Sequence[Image.Image], callback: ProgressCallback | None, *,
                    previews: bool) -> list[Pivot]:
        """The W+ pivots of several aligned faces in one batched e4e pass, reported as one projection step (with
        the pivots' renderings if `previews`)."""
        e4e = self.load_e4e()
        reporter = ProgressReporter(callback, "projection", 1, report_every=1, preview_every=int(previews))
        ws = e4e.invert_tensor(torch.cat([e4e_input_tensor(face) for face in faces]))
        preview = None
        if reporter.active and previews:
            with torch.no_grad():
                preview = self.generator.synthesis(ws.to(self.device), noise_mode="const", force_fp32=True)
        reporter.step(1, {}, preview)
        return [Pivot(w=code.detach().cpu().float(), num_ws=self.generator.num_ws, source="e4e")
                for code in ws.split(1)]

    def tune(self, targets: torch.Tensor, pivots: Sequence[Pivot], *, config: TuningConfig | None = None,
             callback: ProgressCallback | None = None, seed: int = 0) -> TunedGenerator:
        """Pivotal tuning of a copy of this pipeline's generator on (N, 3, R, R) targets and their pivots."""
        return pivotal_tune(self.generator, targets, pivots, config or self.config.tuning, device=self.device,
                            seed=seed, callback=callback, lpips=self.lpips_alex)

    def invert(self, image: ImageInput, *, config: PTIConfig | None = None, face_index: int | None = None,
               callback: ProgressCallback | None = None, seed: int = 0, pivot: str = "w",
               align: bool = True) -> InversionResult:
        """PTI on one photo (path, PIL image or `AlignedFace`): align, find the pivot, tune, reconstruct."""
        return self.invert_many([image], config=config, face_indices=[face_index], callback=callback, seed=seed,
                                pivot=pivot, align=align)

    def invert_many(self, images: Sequence[ImageInput], *, config: PTIConfig | None = None,
                    face_indices: Sequence[int | None] | None = None, callback: ProgressCallback | None = None,
                    seed: int = 0, pivot: str = "w", align: bool = True) -> InversionResult:
        """Multi-ID PTI: one pivot per photo, then one generator tuned for all (`config.tuning.multi_id_schedule`)."""
        config = config or self.config
        if pivot not in PIVOT_METHODS:
            raise ValueError(f"unknown pivot method {pivot!r}; available: {list(PIVOT_METHODS)}")
        if not images:
            raise ValueError("invert_many needs at least one image")
        if pivot == "e4e":
            self.load_e4e()  # first use: load and check the encoder before any work (and outside the timing)
        face_indices = list(face_indices) if face_indices is not None else [None] * len(images)
        if len(face_indices) != len(images):
            raise ValueError(f"{len(images)} images but {len(face_indices)} face indices")
        prepared = [self.prepare(image, face_index=index, align=align) for image, index in zip(images, face_indices)]
        targets = torch.cat([target for _, target in prepared])

        start = time.perf_counter()
        if pivot == "e4e":  # every face in one encoder pass
            faces = [aligned.image if aligned is not None else tensor_to_pil(target)[0] for aligned, target in prepared]
            pivots = self._e4e_pivots(faces, callback, previews=config.projection.preview_every > 0)
        else:
            several = len(images) > 1
            pivots = [self.find_pivot(target, config=config.projection, seed=seed + i,
                                      callback=_for_identity(callback, i) if several else callback)
                      for i, target in enumerate(targets.split(1))]
        projection_s = time.perf_counter() - start
        tuned = self.tune(targets, pivots, config=config.tuning, callback=callback, seed=seed)
        tuning_s = time.perf_counter() - start - projection_s

        with torch.no_grad():
            ws = torch.cat([p.ws for p in pivots]).to(self.device)
            before = self.generator.synthesis(ws, noise_mode="const", force_fp32=True)
            after = tuned.render(ws)
        device_targets = targets.to(self.device)
        metrics_before = reconstruction_metrics(before, device_targets, lpips=self.lpips_alex, identity=self.identity)
        metrics_after = reconstruction_metrics(after, device_targets, lpips=self.lpips_alex, identity=self.identity)
        identities = tuple(
            IdentityReconstruction(aligned=aligned, target=target, pivot=p, pivot_original=image_before,
                                   pivot_tuned=image_after, metrics_original=m_before, metrics_tuned=m_after)
            for (aligned, target), p, image_before, image_after, m_before, m_after in zip(
                prepared, pivots, tensor_to_pil(before), tensor_to_pil(after), metrics_before, metrics_after)
        )
        return InversionResult(identities=identities, tuned=tuned, projection_s=projection_s, tuning_s=tuning_s,
                               pivot_method=pivot)

    def invert_group(self, photo: str | os.PathLike | Image.Image, *, config: PTIConfig | None = None,
                     callback: ProgressCallback | None = None, seed: int = 0, pivot: str = "w",
                     max_faces: int = DEFAULT_MAX_FACES, min_face_size: int = MIN_GROUP_FACE_SIZE) -> GroupInversion:
        """Multi-ID PTI on every usable face of one photo (`alignment.align_faces`): a pivot per face, then one
        generator tuned for all of them."""
        group = align_faces(photo, predictor_path=self.predictor_path, max_faces=max_faces,
                            min_face_size=min_face_size)
        result = self.invert_many(list(group.faces), config=config, callback=callback, seed=seed, pivot=pivot)
        return GroupInversion(group=group, result=result)

    def measure_step_times(self, *, steps: int = 3) -> StepTimes:
        """Time short projection and tuning runs (without and with the regulariser) on a rendered target."""
        with torch.no_grad():
            w_avg = self.generator.mapping.w_avg.reshape(1, 1, -1).repeat(1, self.generator.num_ws, 1)
            target = self.generator.synthesis(w_avg, noise_mode="const", force_fp32=True).clamp(-1, 1)
        reports: list[Progress] = []
        projection = ProjectionConfig(num_steps=steps, preview_every=0)
        start = time.perf_counter()
        pivot = self.find_pivot(target, config=projection, callback=reports.append)
        projection_total = time.perf_counter() - start
        projection_step = _median_step(reports)
        tuning_steps = {}
        for regularized in (False, True):
            reports = []
            tuning = preset("paper", tuning={"num_steps": steps, "early_stop_lpips": None, "preview_every": 0},
                            locality={"enabled": regularized}).tuning
            start = time.perf_counter()
            self.tune(target, [pivot], config=tuning, callback=reports.append)
            tuning_total = time.perf_counter() - start
            tuning_steps[regularized] = _median_step(reports)
        return StepTimes(
            projection_setup=max(0.0, projection_total - steps * projection_step),
            projection_step=projection_step,
            tuning_setup=max(0.0, tuning_total - steps * tuning_steps[True]),
            tuning_step=tuning_steps[False],
            locality_extra=max(0.0, tuning_steps[True] - tuning_steps[False]),
        )

    def measure_e4e_seconds(self) -> float:
        """Seconds of one e4e pivot (encoder pass on a rendered face), after a warm-up pass; loads the encoder."""
        e4e = self.load_e4e()
        with torch.no_grad():
            w_avg = self.generator.mapping.w_avg.reshape(1, 1, -1).repeat(1, self.generator.num_ws, 1)
            face = tensor_to_pil(self.generator.synthesis(w_avg, noise_mode="const", force_fp32=True))[0]
        e4e.invert(face)
        start = time.perf_counter()
        e4e.invert(face)
        return time.perf_counter() - start

    def estimate_seconds(self, config: PTIConfig | None = None, *, num_identities: int = 1,
                         pivot: str = "w") -> float:
        """Estimated wall time of `invert`/`invert_many` with `config`, from step times measured once (lazily).

        With `pivot='e4e'` the pivot costs one encoder pass (timed once; this loads the encoder) instead of the
        projection's steps.
        """
        if pivot not in PIVOT_METHODS:
            raise ValueError(f"unknown pivot method {pivot!r}; available: {list(PIVOT_METHODS)}")
        config = config or self.config
        if self._step_times is None:
            self._step_times = self.measure_step_times()
        times = self._step_times
        locality = config.tuning.locality
        regularized_fraction = (1.0 / locality.interval) if locality.enabled and locality.weight > 0 else 0.0
        tuning_step = num_identities * (
            times.tuning_step + regularized_fraction * locality.num_samples * times.locality_extra)
        if pivot == "e4e":
            if self._e4e_seconds is None:
                self._e4e_seconds = self.measure_e4e_seconds()
            projection = num_identities * self._e4e_seconds
        else:
            projection = num_identities * (times.projection_setup + config.projection.num_steps * times.projection_step)
        return projection + times.tuning_setup + config.tuning.num_steps * tuning_step
