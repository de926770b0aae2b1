"""W projection (Karras et al.'s projector, as PTI uses it): optimise one W code so G renders the target -> pivot."""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from PIL import Image

from pti.config import ProjectionConfig
from pti.images import pil_to_tensor
from pti.losses import PerceptualLoss, build_lpips, downsample_area, noise_regularization, normalize_noise_
from pti.progress import ProgressCallback, ProgressReporter

PivotSource = Literal["w", "e4e", "loaded"]


class TargetError(ValueError):
    """A target image does not fit the generator (wrong shape, size or type)."""


@dataclass(frozen=True, eq=False)
class Pivot:
    """A latent code PTI tunes the generator around: W (1, w_dim), or W+ (1, num_ws, w_dim) from an encoder."""

    w: torch.Tensor  # (1, w_dim) for a W pivot, (1, num_ws, w_dim) for a W+ pivot; CPU, float32
    num_ws: int  # number of W+ layers of the generator it belongs to
    source: str = "w"  # how it was found: "w" (projection), "e4e", "loaded"
    steps_run: int = 0  # optimisation steps that produced it
    loss_history: dict[str, torch.Tensor] = field(default_factory=dict)  # per-step losses (CPU, float32)

    def __post_init__(self) -> None:
        shape = tuple(self.w.shape)
        if not (len(shape) == 2 and shape[0] == 1) and not (len(shape) == 3 and shape[:2] == (1, self.num_ws)):
            raise ValueError(f"a pivot must have shape (1, w_dim) or (1, {self.num_ws}, w_dim), got {shape}")

    @property
    def is_wplus(self) -> bool:
        """True for a W+ pivot (one code per layer), False for a W pivot (one code broadcast to all layers)."""
        return self.w.ndim == 3

    @property
    def ws(self) -> torch.Tensor:
        """The pivot as W+ codes (1, num_ws, w_dim), ready for `G.synthesis`."""
        return self.w if self.is_wplus else self.w.unsqueeze(1).repeat(1, self.num_ws, 1)


def target_tensor(target: torch.Tensor | Image.Image, resolution: int) -> torch.Tensor:
    """A target (PIL image, or (1, 3, R, R) tensor in [-1, 1]) as a (1, 3, R, R) float32 CPU-or-device tensor."""
    if isinstance(target, Image.Image):
        return pil_to_tensor(target, size=resolution)
    if not isinstance(target, torch.Tensor):
        raise TargetError(f"a target must be a PIL image or a tensor, got {type(target).__name__}")
    if tuple(target.shape) != (1, 3, resolution, resolution):
        raise TargetError(f"a target tensor must have shape (1, 3, {resolution}, {resolution}) for this generator, "
                          f"got {tuple(target.shape)}; resize the image to the generator's resolution")
    return target.float()


def learning_rate_at(config: ProjectionConfig, step: int) -> float:
    """Karras et al.'s schedule: linear ramp-up, flat, cosine ramp-down to zero, at step `step` (0-based)."""
    t = step / config.num_steps
    ramp = min(1.0, (1.0 - t) / config.lr_rampdown_fraction) if config.lr_rampdown_fraction > 0 else 1.0
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    if config.lr_rampup_fraction > 0:
        ramp = ramp * min(1.0, t / config.lr_rampup_fraction)
    return config.learning_rate * ramp


def latent_noise_scale_at(config: ProjectionConfig, step: int, w_std: float) -> float:
    """Standard deviation of the noise added to w at step `step`: decays quadratically to 0."""
    if config.noise_ramp_fraction == 0:
        return 0.0
    t = step / config.num_steps
    return w_std * config.initial_noise_factor * max(0.0, 1.0 - t / config.noise_ramp_fraction) ** 2


@torch.no_grad()
def w_statistics(G: torch.nn.Module, config: ProjectionConfig, generator: torch.Generator,
                 device: torch.device) -> tuple[torch.Tensor, float]:
    """Start point (1, w_dim) and W standard deviation (scalar) from `config.w_avg_samples` mapped z samples."""
    z = torch.randn(config.w_avg_samples, G.z_dim, generator=generator).to(device)
    w_samples = G.mapping(z, None)[:, 0, :]
    w_mean = w_samples.mean(dim=0, keepdim=True)
    w_std = float(((w_samples - w_mean).square().sum() / config.w_avg_samples).sqrt())
    w_start = G.mapping.w_avg.detach().reshape(1, -1).clone() if config.w_avg_source == "buffer" else w_mean
    return w_start, w_std


def project_w(G: torch.nn.Module, target: torch.Tensor | Image.Image, config: ProjectionConfig | None = None, *,
              device: torch.device | str = "cpu", seed: int = 0, callback: ProgressCallback | None = None,
              lpips: PerceptualLoss | None = None) -> Pivot:
    """Project `target` into W: Adam on one w (plus the noise inputs) under LPIPS-VGG; returns the W pivot.

    `G` is not modified (the optimised noise lives in a private copy). `lpips` defaults to a pretrained LPIPS-VGG
    (pass one to reuse it). `callback` gets a `Progress` each step; a truthy return raises `Cancelled`.
    """
    config = config or ProjectionConfig()
    if G.c_dim != 0:
        raise ValueError(f"only unconditional generators can be projected into (c_dim is {G.c_dim})")
    device = torch.device(device)
    target = target_tensor(target, G.img_resolution).to(device)
    lpips = lpips if lpips is not None else build_lpips("vgg", device=device)
    lpips_resolution = min(config.lpips_resolution, G.img_resolution)

    G_work = copy.deepcopy(G).eval().requires_grad_(False).to(device)  # its noise buffers get optimised
    cpu_rng = torch.Generator().manual_seed(seed)
    w_start, w_std = w_statistics(G_work, config, cpu_rng, device)
    noise_buffers = [b for name, b in G_work.synthesis.named_buffers() if name.endswith("noise_const")]
    if config.optimize_noise:
        for buffer in noise_buffers:
            buffer.copy_(torch.randn(buffer.shape, generator=cpu_rng))
            buffer.requires_grad_(True)
    else:
        noise_buffers = []
    w_opt = w_start.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([w_opt] + noise_buffers, betas=(0.9, 0.999), lr=config.learning_rate)
    step_rng = torch.Generator(device=device).manual_seed(seed + 1)

    with torch.no_grad():
        target_features = lpips.features(downsample_area(target, lpips_resolution))
    history = torch.zeros(config.num_steps, 3, device=device)  # lpips, noise_reg, loss; read once at the end
    reporter = ProgressReporter(callback, "projection", config.num_steps, report_every=config.report_every,
                                preview_every=config.preview_every)
    for step in range(config.num_steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(config, step)
        noise_scale = latent_noise_scale_at(config, step, w_std)
        w = w_opt + torch.randn(w_opt.shape, generator=step_rng, device=device) * noise_scale
        images = G_work.synthesis(w.unsqueeze(1).repeat(1, G_work.num_ws, 1), noise_mode="const",
                                  force_fp32=config.force_fp32)
        distance = lpips.distance_from_features(lpips.features(downsample_area(images, lpips_resolution)),
                                                target_features).sum()
        noise_reg = noise_regularization(noise_buffers) if noise_buffers else torch.zeros((), device=device)
        loss = distance + config.noise_regularize_weight * noise_reg
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        normalize_noise_(noise_buffers)
        with torch.no_grad():
            history[step, 0], history[step, 1], history[step, 2] = distance, noise_reg, loss
        if reporter.active:
            reporter.step(step + 1, {"lpips": distance, "noise_reg": noise_reg, "loss": loss}, images)

    history = history.cpu()
    return Pivot(
        w=w_opt.detach().cpu().clone(),
        num_ws=G.num_ws,
        source="w",
        steps_run=config.num_steps,
        loss_history={"lpips": history[:, 0], "noise_reg": history[:, 1], "loss": history[:, 2]},
    )
