"""InterfaceGAN directions in W: age, smile and head pose (yaw) of StyleGAN2 FFHQ, applied as `w + factor * d`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from editing_directions.errors import DirectionFileError, LatentShapeError
from editing_directions.files import read_weights_only


@dataclass(frozen=True)
class InterfaceGANDirection:
    """One InterfaceGAN direction: its edit name, display label, registry key, file name and slider range."""

    name: str  # edit name, as in `Edit('interfacegan', name, factor)`
    label: str  # display name
    registry_key: str  # key in `pti.weights.REGISTRY`
    filename: str  # file name in the release (and in a local directions folder)
    # Our factor multiplies the direction as given (w + factor * d). PTI's evaluation sweeps -3..3 but its editor
    # halves the factor, moving w by -1.5..1.5 d; this slider reaches twice as far (-3..3 d).
    min: float = -3.0
    max: float = 3.0
    step: float = 0.1
    default: float = 0.0  # factor 0 is the identity


INTERFACEGAN_DIRECTIONS = (
    InterfaceGANDirection("age", "Age", "interfacegan-age", "age.pt"),
    InterfaceGANDirection("smile", "Smile", "interfacegan-smile", "smile.pt"),
    InterfaceGANDirection("pose", "Head pose (yaw)", "interfacegan-rotation", "rotation.pt"),
)


def load_direction(path: str | Path) -> torch.Tensor:
    """Load and validate a direction file (float tensor [1, D] or [D], finite, nonzero) -> float32 tensor [D]."""
    direction = read_weights_only(path, error=DirectionFileError, what="direction file")
    return validate_direction(direction, source=str(path))


def validate_direction(direction: object, *, source: str = "direction") -> torch.Tensor:
    """Check a direction (float tensor [1, D] or [D], finite, nonzero) -> float32 tensor [D]."""
    if not isinstance(direction, torch.Tensor):
        raise DirectionFileError(f"{source}: expected a tensor, found {type(direction).__name__}")
    if not direction.is_floating_point():
        raise DirectionFileError(f"{source}: expected a floating-point tensor, found dtype {direction.dtype}")
    if not (direction.ndim == 1 or (direction.ndim == 2 and direction.shape[0] == 1)) or direction.numel() == 0:
        raise DirectionFileError(
            f"{source}: expected a direction of shape [1, D] or [D], found {tuple(direction.shape)}")
    if not torch.isfinite(direction).all():
        raise DirectionFileError(f"{source}: the direction contains NaN or infinite values")
    if not direction.abs().sum() > 0:
        raise DirectionFileError(f"{source}: the direction is all zeros")
    return direction.reshape(-1).float()


def apply_direction(w: torch.Tensor, direction: torch.Tensor, factor: float) -> torch.Tensor:
    """`w + factor * direction` on every layer of a W+ code (N, L, D); the direction has shape [D]."""
    if w.ndim != 3 or w.shape[2] != direction.numel():
        raise LatentShapeError(
            f"an InterfaceGAN direction of {direction.numel()} dims needs a W+ code (N, L, {direction.numel()}), "
            f"got {tuple(w.shape)}")
    return w + factor * direction.reshape(-1).to(device=w.device, dtype=w.dtype)
