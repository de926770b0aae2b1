"""StyleCLIP latent mappers: our implementation of the released `LevelsMapper` and a safe checkpoint loader.

A mapper checkpoint is `{'state_dict': {'mapper.*': ..., 'decoder.*': ...}, 'opts': dict or argparse.Namespace}`.
The W+ code (N, L, D) is split into coarse `[:, :4]`, medium `[:, 4:8]` and fine `[:, 8:]` layers; each level has
its own 4-layer mapper (PixelNorm, then EqualLinear with lr_mul 0.01 and scaled leaky ReLU) unless the training
options switched it off (`no_coarse_mapper`, `no_medium_mapper`, `no_fine_mapper`), in which case it outputs zeros.
The coarse mapper's keys keep the release's spelling `course_mapping`. An edit is `w + alpha * mapper(w)`.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from editing_directions.errors import LatentShapeError, MapperFileError
from editing_directions.files import read_weights_only

DEFAULT_ALPHA = 0.1  # strength of the StyleCLIP release (PTI's script uses 0.06)
ALPHA_MIN = 0.0  # slider range of the mapper strength
ALPHA_MAX = 0.3
ALPHA_STEP = 0.01
LR_MUL = 0.01  # learning-rate multiplier of every EqualLinear in the released mapper
NUM_LINEAR_LAYERS = 4  # EqualLinear layers per level (`mapping.1` .. `mapping.4`; `mapping.0` is PixelNorm)
STATE_PREFIX = "mapper."  # prefix of the mapper's keys in the checkpoint's state dict

# (module attribute and state-dict name, option that switches the level off, first W+ layer, end W+ layer)
LEVELS = (
    ("course_mapping", "no_coarse_mapper", 0, 4),
    ("medium_mapping", "no_medium_mapper", 4, 8),
    ("fine_mapping", "no_fine_mapper", 8, None),
)


class PixelNorm(nn.Module):
    """The release's PixelNorm: normalises over dim 1, i.e. across the W+ layers of one level."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Divide by the root mean square over dim 1."""
        return x * torch.rsqrt(torch.mean(x**2, dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Equalised-learning-rate linear layer with fused (scaled) leaky ReLU, as in rosinality's StyleGAN2."""

    def __init__(self, in_dim: int, out_dim: int, *, lr_mul: float = LR_MUL):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)  # stored weight, scaled at run time
        self.bias = nn.Parameter(torch.zeros(out_dim))  # stored bias, multiplied by lr_mul at run time
        self.scale = lr_mul / math.sqrt(in_dim)  # weight multiplier: lr_mul / sqrt(fan_in)
        self.lr_mul = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`leaky_relu(x @ (weight * scale).T + bias * lr_mul, 0.2) * sqrt(2)`, bias on the last dim."""
        y = F.linear(x, self.weight * self.scale)
        return F.leaky_relu(y + self.bias * self.lr_mul, negative_slope=0.2) * math.sqrt(2)


class LevelMapper(nn.Module):
    """The mapper of one level (the release's `Mapper`): PixelNorm then four EqualLinear layers."""

    def __init__(self, latent_dim: int):
        super().__init__()
        layers = [EqualLinear(latent_dim, latent_dim) for _ in range(NUM_LINEAR_LAYERS)]
        self.mapping = nn.Sequential(PixelNorm(), *layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map the (N, L, D) slice of one level."""
        return self.mapping(x)


class LevelsMapper(nn.Module):
    """StyleCLIP's `LevelsMapper`: separate mappers for the coarse, medium and fine layers of a W+ code."""

    def __init__(
        self,
        *,
        latent_dim: int = 512,  # width D of the W+ code (512 for FFHQ; 32 for the tiny test generator)
        no_coarse_mapper: bool = False,  # coarse layers [:4] output zeros
        no_medium_mapper: bool = False,  # medium layers [4:8] output zeros
        no_fine_mapper: bool = False,  # fine layers [8:] output zeros
    ):
        super().__init__()
        self.latent_dim = latent_dim
        switched_off = {"no_coarse_mapper": no_coarse_mapper, "no_medium_mapper": no_medium_mapper,
                        "no_fine_mapper": no_fine_mapper}
        self.active_levels = tuple(name for name, option, _, _ in LEVELS if not switched_off[option])
        for name in self.active_levels:
            setattr(self, name, LevelMapper(latent_dim))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        """Raw mapper output for a W+ code (N, L, D), before `alpha`; switched-off levels give zeros."""
        if w.ndim != 3 or w.shape[2] != self.latent_dim:
            raise LatentShapeError(
                f"the mapper expects a W+ code of shape (N, L, {self.latent_dim}), got {tuple(w.shape)}")
        parts = []
        for name, _, start, end in LEVELS:
            part = w[:, start:end]
            parts.append(getattr(self, name)(part) if name in self.active_levels else torch.zeros_like(part))
        return torch.cat(parts, dim=1)


def random_levels_mapper(latent_dim: int, *, seed: int, no_fine_mapper: bool = False) -> LevelsMapper:
    """A mapper with seeded `torch.randn` weights (keys in sorted order, weights divided by lr_mul): a demo, no edit."""
    mapper = LevelsMapper(latent_dim=latent_dim, no_fine_mapper=no_fine_mapper)
    generator = torch.Generator().manual_seed(seed)
    state = mapper.state_dict()
    for key in sorted(state):
        value = torch.randn(state[key].shape, generator=generator)
        state[key] = value / LR_MUL if key.endswith(".weight") else value
    mapper.load_state_dict(state)
    return mapper.eval().requires_grad_(False)


def apply_mapper(w: torch.Tensor, mapper: LevelsMapper, alpha: float) -> torch.Tensor:
    """`w + alpha * mapper(w)`, the mapper run on its own device in float32, the result on `w`'s device/dtype."""
    parameter = next(mapper.parameters(), None)
    mapper_device = parameter.device if parameter is not None else w.device
    with torch.no_grad():
        offset = mapper(w.to(device=mapper_device, dtype=torch.float32))
    return w + alpha * offset.to(device=w.device, dtype=w.dtype)


def _read_checkpoint(path: Path) -> object:
    """weights_only loading; older files whose `opts` is an argparse.Namespace get that one class allowed."""
    try:
        return read_weights_only(path, error=MapperFileError, what="mapper checkpoint")
    except MapperFileError as refusal:
        if "argparse.Namespace" not in str(refusal):
            raise
    # A Namespace is rebuilt by setting plain attributes: allowing it executes nothing from the file.
    return read_weights_only(path, error=MapperFileError, what="mapper checkpoint",
                             allowed_globals=[argparse.Namespace])


def _options(checkpoint: dict, mapper_state: dict[str, torch.Tensor], path: Path) -> dict[str, bool]:
    """The three level switches, from `opts` (dict or Namespace) or, without `opts`, from which keys exist."""
    opts = checkpoint.get("opts")
    if isinstance(opts, argparse.Namespace):
        opts = vars(opts)
    if opts is None:
        return {option: not any(key.startswith(f"{name}.") for key in mapper_state) for name, option, _, _ in LEVELS}
    if not isinstance(opts, dict):
        raise MapperFileError(f"{path}: 'opts' should be a dict or argparse.Namespace, got {type(opts).__name__}")
    mapper_type = opts.get("mapper_type", "LevelsMapper")
    if mapper_type != "LevelsMapper":
        raise MapperFileError(f"{path}: mapper_type {mapper_type!r} is not supported (only 'LevelsMapper')")
    return {option: bool(opts.get(option, False)) for _, option, _, _ in LEVELS}


def load_mapper(path: str | Path, *, device: torch.device | str = "cpu") -> LevelsMapper:
    """Load a StyleCLIP LevelsMapper checkpoint (float32, eval, no grad); the `decoder.*` weights are ignored."""
    path = Path(path)
    checkpoint = _read_checkpoint(path)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise MapperFileError(f"{path}: expected a dict with a 'state_dict' entry (a StyleCLIP mapper checkpoint)")
    mapper_state = {key[len(STATE_PREFIX):]: value for key, value in checkpoint["state_dict"].items()
                    if isinstance(key, str) and key.startswith(STATE_PREFIX)}
    if not mapper_state:
        raise MapperFileError(f"{path}: the state dict has no '{STATE_PREFIX}*' keys")
    switches = _options(checkpoint, mapper_state, path)
    first_weight = next((value for key, value in sorted(mapper_state.items())
                         if key.endswith("mapping.1.weight")), None)
    if not isinstance(first_weight, torch.Tensor) or first_weight.ndim != 2:
        raise MapperFileError(f"{path}: no '<level>.mapping.1.weight' matrix to read the latent width from")
    mapper = LevelsMapper(latent_dim=first_weight.shape[1], **switches)
    expected = mapper.state_dict()
    missing = sorted(set(expected) - set(mapper_state))
    unexpected = sorted(set(mapper_state) - set(expected))
    if missing or unexpected:
        raise MapperFileError(
            f"{path}: mapper keys do not match a LevelsMapper with switches {switches}: "
            f"missing {[STATE_PREFIX + key for key in missing[:6]]}{' ...' if len(missing) > 6 else ''}, "
            f"unexpected {[STATE_PREFIX + key for key in unexpected[:6]]}{' ...' if len(unexpected) > 6 else ''}")
    for key, reference in expected.items():
        value = mapper_state[key]
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise MapperFileError(f"{path}: {STATE_PREFIX}{key} is not a floating-point tensor")
        if value.shape != reference.shape:
            raise MapperFileError(
                f"{path}: {STATE_PREFIX}{key} has shape {tuple(value.shape)}, expected {tuple(reference.shape)}")
        if not torch.isfinite(value).all():
            raise MapperFileError(f"{path}: {STATE_PREFIX}{key} contains NaN or infinite values")
    mapper.load_state_dict({key: mapper_state[key].float() for key in expected})
    return mapper.to(device).eval().requires_grad_(False)
