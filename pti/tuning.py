"""Pivotal tuning (PTI sec. 3.2-3.3): fine-tune the generator so its pivots render their targets, locally."""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from pti.config import TuningConfig
from pti.losses import PerceptualLoss, build_lpips, downsample_area, l2_per_image
from pti.progress import ProgressCallback, ProgressReporter
from pti.projector import Pivot, TargetError, target_tensor

WEIGHTS_FILENAME = "tuned.safetensors"
PIVOT_FILENAME = "pivot.npy"  # one identity
PIVOTS_FILENAME = "pivots.npz"  # several identities: arrays pivot_0, pivot_1, ...
_PIVOT_SOURCES_KEY = "pti_pivot_sources"


class TunedGeneratorFileError(ValueError):
    """A saved tuned generator is missing a file or its files do not match."""


def canonical_device(device: torch.device | str) -> torch.device:
    """`device` with its index filled in ('cuda' -> 'cuda:<current>'), so it compares equal to a tensor's device."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _device_of(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


def _as_pivots(pivots: Pivot | torch.Tensor | Sequence[Pivot | torch.Tensor], num_ws: int) -> tuple[Pivot, ...]:
    """Normalise one pivot / tensor, or a sequence of them, to a tuple of `Pivot`s."""
    if isinstance(pivots, Pivot):
        pivots = [pivots]
    elif isinstance(pivots, torch.Tensor):  # (w_dim,), (N, w_dim) or (N, num_ws, w_dim): one pivot per row
        pivots = [pivots[None]] if pivots.ndim == 1 else list(pivots.split(1))
    result = []
    for pivot in pivots:
        if isinstance(pivot, torch.Tensor):
            pivot = Pivot(w=pivot.detach().float().cpu(), num_ws=num_ws, source="loaded")
        if pivot.num_ws != num_ws:
            raise ValueError(f"a pivot for a generator with {pivot.num_ws} W+ layers given to one with {num_ws}")
        result.append(pivot)
    return tuple(result)


def _as_targets(targets: torch.Tensor | Image.Image | Sequence[torch.Tensor | Image.Image],
                resolution: int) -> torch.Tensor:
    """One target, a list of targets, or an (N, 3, R, R) batch -> (N, 3, R, R) float32 tensor."""
    if isinstance(targets, torch.Tensor) and targets.ndim == 4 and targets.shape[0] > 1:
        return torch.cat([target_tensor(t[None], resolution) for t in targets])
    if isinstance(targets, (torch.Tensor, Image.Image)):
        targets = [targets]
    return torch.cat([target_tensor(t, resolution) for t in targets])


def locality_codes(G_original: torch.nn.Module, pivot_ws: torch.Tensor, config: TuningConfig,
                   generator: torch.Generator) -> torch.Tensor:
    """W+ codes w_r = w_p + alpha (w_z - w_p) / ||w_z - w_p|| around each pivot, N_r per pivot (sec. 3.3).

    w_z = mapping(z) with truncation; the norm is over the whole (num_ws, w_dim) code, as the official code.
    """
    locality = config.locality
    count = pivot_ws.shape[0] * locality.num_samples
    z = torch.randn(count, G_original.z_dim, generator=generator, device=pivot_ws.device)
    w_z = G_original.mapping(z, None, truncation_psi=locality.truncation_psi)
    w_p = pivot_ws.repeat_interleave(locality.num_samples, dim=0)
    direction = w_z - w_p
    return w_p + locality.alpha * direction / direction.flatten(1).norm(dim=1).view(-1, 1, 1)


@dataclass(frozen=True, eq=False)
class SavedTunedGenerator:
    """Paths written by `TunedGenerator.save`."""

    weights: Path  # safetensors, reference StyleGAN2-ADA parameter names
    pivots: Path  # pivot.npy (one identity) or pivots.npz (several)


@dataclass(frozen=True, eq=False)
class TunedGenerator:
    """The generator after pivotal tuning (kept on the CPU between calls) and the pivots it was tuned around."""

    generator: torch.nn.Module  # the tuned Generator (on the tuning device; `to("cpu")` to park it), frozen
    pivots: tuple[Pivot, ...]  # one per identity, in the order of the targets
    steps_run: int = 0  # optimiser updates taken (fewer than planned if early stop triggered)
    loss_history: dict[str, torch.Tensor] = field(default_factory=dict)  # per-update losses of its identities (CPU)

    def to(self, device: torch.device | str) -> "TunedGenerator":
        """Move the tuned generator to `device` (in place); returns self."""
        self.generator.to(device)
        return self

    @torch.no_grad()
    def render(self, latents: torch.Tensor | Pivot, *, noise_mode: str = "const",
               force_fp32: bool = True) -> torch.Tensor:
        """Render W (N, w_dim), W+ (N, num_ws, w_dim) or a `Pivot` with the tuned generator -> (N, 3, R, R)."""
        ws = latents.ws if isinstance(latents, Pivot) else latents
        if ws.ndim == 2:
            ws = ws.unsqueeze(1).repeat(1, self.generator.num_ws, 1)
        ws = ws.to(_device_of(self.generator), torch.float32)
        return self.generator.synthesis(ws, noise_mode=noise_mode, force_fp32=force_fp32)

    @torch.no_grad()
    def changed_parameters(self, original: torch.nn.Module) -> dict[str, float]:
        """Names of the parameters/buffers that differ from `original`'s, with their largest absolute change."""
        mine = self.generator.state_dict()
        changed = {}
        for name, value in original.state_dict().items():
            tuned = mine[name].to(value.device)
            if not torch.equal(tuned, value):
                changed[name] = float((tuned.float() - value.float()).abs().max())
        return changed

    def save(self, directory: str | Path) -> SavedTunedGenerator:
        """Write `tuned.safetensors` (loadable by the original code's `load_state_dict`) and the pivot(s) .npy/.npz."""
        from pti.generator_io import save_generator

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        weights_path = directory / WEIGHTS_FILENAME
        sources = json.dumps([p.source for p in self.pivots])
        save_generator(self.generator, weights_path, metadata={_PIVOT_SOURCES_KEY: sources})
        arrays = [p.w.numpy().astype(np.float32) for p in self.pivots]
        if len(arrays) == 1:
            pivots_path = directory / PIVOT_FILENAME
            np.save(pivots_path, arrays[0])
        else:
            pivots_path = directory / PIVOTS_FILENAME
            np.savez(pivots_path, **{f"pivot_{i}": a for i, a in enumerate(arrays)})
        return SavedTunedGenerator(weights=weights_path, pivots=pivots_path)

    @classmethod
    def load(cls, directory: str | Path, *, device: torch.device | str = "cpu") -> "TunedGenerator":
        """Read what `save` wrote in `directory`."""
        from pti.generator_io import load_generator_file, read_metadata

        directory = Path(directory)
        weights_path = directory / WEIGHTS_FILENAME
        if not weights_path.is_file():
            raise TunedGeneratorFileError(f"{directory}: no {WEIGHTS_FILENAME} (not a saved tuned generator?)")
        single, several = directory / PIVOT_FILENAME, directory / PIVOTS_FILENAME
        if single.is_file():
            arrays = [np.load(single, allow_pickle=False)]
        elif several.is_file():
            with np.load(several, allow_pickle=False) as archive:
                arrays = [archive[f"pivot_{i}"] for i in range(len(archive.files))]
        else:
            raise TunedGeneratorFileError(f"{directory}: no {PIVOT_FILENAME} or {PIVOTS_FILENAME}")
        generator = load_generator_file(weights_path, device=device).eval().requires_grad_(False)
        sources = json.loads(read_metadata(weights_path).get(_PIVOT_SOURCES_KEY, "null")) or ["loaded"] * len(arrays)
        if len(sources) != len(arrays):
            raise TunedGeneratorFileError(f"{directory}: {len(arrays)} pivots but {len(sources)} recorded sources")
        pivots = tuple(Pivot(w=torch.from_numpy(a), num_ws=generator.num_ws, source=s) for a, s in zip(arrays, sources))
        return cls(generator=generator, pivots=pivots)


def pivotal_tune(G: torch.nn.Module, targets: torch.Tensor | Image.Image | Sequence[torch.Tensor | Image.Image],
                 pivots: Pivot | torch.Tensor | Sequence[Pivot | torch.Tensor], config: TuningConfig | None = None, *,
                 device: torch.device | str = "cpu", seed: int = 0, callback: ProgressCallback | None = None,
                 lpips: PerceptualLoss | None = None) -> TunedGenerator:
    """Tune a copy of `G` so each pivot renders its target (one identity or several at once); `G` stays unchanged.

    Loss per update: over its identities, the mean of lpips_weight * LPIPS + l2_weight * L2, plus (locality on)
    lambda_R times the mean over random codes w_r around their pivots of LPIPS + lambda^R_L2 * L2 between the tuned
    and the frozen original generator. Which identities an update uses follows `config.multi_id_schedule`: with
    "per_identity" (several identities) update u uses identity u mod N alone; otherwise all of them. The renders of
    pivots and w_r go through the generator in one batch. `lpips` defaults to a pretrained LPIPS-AlexNet.
    `callback` gets a `Progress` each update; a truthy return raises `Cancelled`.
    """
    config = config or TuningConfig()
    device = canonical_device(device)
    targets = _as_targets(targets, G.img_resolution).to(device)
    pivots = _as_pivots(pivots, G.num_ws)
    if len(pivots) != targets.shape[0]:
        raise TargetError(f"{targets.shape[0]} target(s) but {len(pivots)} pivot(s): give one pivot per target")
    lpips = lpips if lpips is not None else build_lpips("alex", device=device)
    lpips_resolution = config.lpips_resolution
    locality = config.locality
    regularize = locality.enabled and locality.weight > 0

    G_original = G if _device_of(G) == device else copy.deepcopy(G).to(device)  # read only, under no_grad
    G_tuned = copy.deepcopy(G).eval().to(device).requires_grad_(False)
    G_tuned.synthesis.requires_grad_(True)  # the mapping network is not on the tuning path
    optimizer = torch.optim.Adam(G_tuned.synthesis.parameters(), lr=config.learning_rate)
    pivot_ws = torch.cat([p.ws for p in pivots]).to(device)
    num_identities = pivot_ws.shape[0]
    per_identity = config.multi_id_schedule == "per_identity" and num_identities > 1
    num_updates = config.num_steps * num_identities if per_identity else config.num_steps
    early_stop_lpips = None if per_identity else config.early_stop_lpips  # the multi-ID coach never stops early
    rng = torch.Generator(device=device).manual_seed(seed)

    with torch.no_grad():
        target_features = lpips.features(downsample_area(targets, lpips_resolution))
    history = torch.zeros(num_updates, 4, device=device)  # lpips, l2, locality, loss; read once at the end
    reporter = ProgressReporter(callback, "tuning", num_updates, report_every=config.report_every,
                                preview_every=config.preview_every)
    steps_run = 0
    for step in range(num_updates):
        identity = step % num_identities if per_identity else None
        chosen = slice(None) if identity is None else slice(identity, identity + 1)
        step_ws, step_targets = pivot_ws[chosen], targets[chosen]
        count = step_ws.shape[0]
        regularize_now = regularize and step % locality.interval == 0
        ws = step_ws
        if regularize_now:
            with torch.no_grad():
                locality_ws = locality_codes(G_original, step_ws, config, rng)
                original_images = G_original.synthesis(locality_ws, noise_mode="const", force_fp32=config.force_fp32)
                original_features = lpips.features(downsample_area(original_images, lpips_resolution))
            ws = torch.cat([step_ws, locality_ws])
        images = G_tuned.synthesis(ws, noise_mode="const", force_fp32=config.force_fp32)
        features = lpips.features(downsample_area(images, lpips_resolution))
        lpips_values = lpips.distance_from_features([f[:count] for f in features], [f[chosen] for f in target_features])
        l2_values = l2_per_image(images[:count], step_targets)
        if early_stop_lpips is not None and step % config.early_stop_check_every == 0:
            # The official check: on the current render, before this step's update.
            if float(lpips_values.detach().max()) < early_stop_lpips:
                break
        loss = (config.lpips_weight * lpips_values + config.l2_weight * l2_values).mean()
        locality_loss = torch.zeros((), device=device)
        if regularize_now:
            locality_lpips = lpips.distance_from_features([f[count:] for f in features], original_features)
            locality_l2 = l2_per_image(images[count:], original_images)
            locality_loss = (locality_lpips + locality.l2_weight * locality_l2).mean()
            loss = loss + locality.weight * locality_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps_run = step + 1
        with torch.no_grad():
            history[step] = torch.stack([lpips_values.mean(), l2_values.mean(), locality_loss, loss])
        if reporter.active:
            losses = {"lpips": lpips_values.mean(), "l2": l2_values.mean(), "loss": loss}
            if regularize_now:
                losses["locality"] = locality_loss
            reporter.step(steps_run, losses, images[:count], identity=identity)

    G_tuned.requires_grad_(False)
    history = history[:steps_run].cpu()
    return TunedGenerator(
        generator=G_tuned,
        pivots=pivots,
        steps_run=steps_run,
        loss_history={"lpips": history[:, 0], "l2": history[:, 1], "locality": history[:, 2], "loss": history[:, 3]},
    )
