"""GANSpace edits: set a W+ code's coordinate along one PCA component of W, on a range of layers (PTI's edits).

With `c = comp[k]`, `s = std[k]`, the code's first W+ layer `w0` and the user's value `v` (which replaces PTI's
fixed strength): `coord = <w0 - mean, c> / s`, `delta = (v - coord) * c * s`, added to layers
`first_layer .. end_layer-1` only. In a chain, `w0` is the first layer of the code produced by the edits before
this one. The value is the target coordinate in units of the component's std, so the identity is the value
equal to the current coordinate (`component_coordinate`), not 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from editing_directions.errors import DirectionFileError, LatentShapeError
from editing_directions.files import read_weights_only

REGISTRY_KEY = "ganspace-ffhq-pca"  # key of `ffhq_pca.pt` in `pti.weights.REGISTRY`
FILENAME = "ffhq_pca.pt"  # file name in the release (and in a local directions folder)


@dataclass(frozen=True)
class GanspacePCA:
    """The PCA of W: `mean` [1, D], `comp` [K, 1, D] (unit components), `std` [K] (positive)."""

    mean: torch.Tensor
    comp: torch.Tensor
    std: torch.Tensor

    @property
    def num_components(self) -> int:
        """Number of components K."""
        return self.comp.shape[0]

    @property
    def w_dim(self) -> int:
        """Width D of W."""
        return self.mean.shape[1]


@dataclass(frozen=True)
class GanspaceEdit:
    """One GANSpace edit of PTI: component, W+ layer range, PTI's strength (the slider default) and slider range."""

    name: str  # edit name, as in `Edit('ganspace', name, value)`
    label: str  # display name
    component: int  # index k into the PCA components
    first_layer: int  # first W+ layer changed
    end_layer: int  # one past the last W+ layer changed
    default: float  # PTI's fixed strength
    min: float = -10.0  # target coordinate, in std units of the component
    max: float = 10.0
    step: float = 0.1


GANSPACE_EDITS = (
    GanspaceEdit("eye_openness", "Eye openness", 54, 7, 8, 5.0),
    GanspaceEdit("smile", "Smile", 46, 4, 5, -6.0),
    GanspaceEdit("trimmed_beard", "Trimmed beard", 58, 7, 9, 7.0),
)


def validate_pca(mean: object, comp: object, std: object, *, source: str = "PCA") -> GanspacePCA:
    """Check shapes and values of a PCA (mean [1, D], comp [K, 1, D], std [K], finite, std > 0) -> float32 PCA."""
    for field, value in (("mean", mean), ("comp", comp), ("std", std)):
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise DirectionFileError(f"{source}: '{field}' should be a floating-point tensor")
        if not torch.isfinite(value).all():
            raise DirectionFileError(f"{source}: '{field}' contains NaN or infinite values")
    if mean.ndim != 2 or mean.shape[0] != 1 or mean.shape[1] == 0:
        raise DirectionFileError(f"{source}: 'mean' should have shape [1, D], found {tuple(mean.shape)}")
    w_dim = mean.shape[1]
    if comp.ndim != 3 or comp.shape[1:] != (1, w_dim) or comp.shape[0] == 0:
        raise DirectionFileError(f"{source}: 'comp' should have shape [K, 1, {w_dim}], found {tuple(comp.shape)}")
    if std.shape != (comp.shape[0],):
        raise DirectionFileError(f"{source}: 'std' should have shape [{comp.shape[0]}], found {tuple(std.shape)}")
    if not (std > 0).all():
        raise DirectionFileError(f"{source}: every 'std' must be positive")
    return GanspacePCA(mean=mean.float(), comp=comp.float(), std=std.float())


def load_pca(path: str | Path) -> GanspacePCA:
    """Load and validate `ffhq_pca.pt` (a dict with `mean`, `comp`, `std`)."""
    content = read_weights_only(path, error=DirectionFileError, what="GANSpace PCA file")
    if not isinstance(content, dict) or not {"mean", "comp", "std"} <= set(content):
        raise DirectionFileError(f"{path}: expected a dict with 'mean', 'comp' and 'std'")
    return validate_pca(content["mean"], content["comp"], content["std"], source=str(path))


def component_coordinate(w: torch.Tensor, pca: GanspacePCA, component: int) -> torch.Tensor:
    """Coordinate (N,) of each code's first W+ layer along `component`, in units of its std."""
    _check_code(w, pca, component)
    c = pca.comp[component, 0].to(device=w.device, dtype=w.dtype)
    s = pca.std[component].to(device=w.device, dtype=w.dtype)
    return ((w[:, 0] - pca.mean.to(device=w.device, dtype=w.dtype)) @ c) / s


def apply_ganspace(w: torch.Tensor, pca: GanspacePCA, edit: GanspaceEdit, value: float) -> torch.Tensor:
    """Set the coordinate along `edit.component` to `value` on layers `first_layer .. end_layer-1` (see module doc)."""
    if edit.first_layer >= w.shape[1]:
        raise LatentShapeError(
            f"GANSpace edit {edit.name!r} changes W+ layers {edit.first_layer}..{edit.end_layer - 1}, "
            f"but the code has only {w.shape[1]} layers")
    coordinate = component_coordinate(w, pca, edit.component)
    c = pca.comp[edit.component, 0].to(device=w.device, dtype=w.dtype)
    s = pca.std[edit.component].to(device=w.device, dtype=w.dtype)
    delta = (value - coordinate)[:, None] * c * s  # (N, D)
    edited = w.clone()
    edited[:, edit.first_layer:edit.end_layer] += delta[:, None, :]
    return edited


def _check_code(w: torch.Tensor, pca: GanspacePCA, component: int) -> None:
    """Refuse a code that is not W+ of the PCA's width, and a component index that the PCA lacks."""
    if w.ndim != 3 or w.shape[2] != pca.w_dim:
        raise LatentShapeError(f"GANSpace needs a W+ code (N, L, {pca.w_dim}), got {tuple(w.shape)}")
    if not 0 <= component < pca.num_components:
        raise DirectionFileError(
            f"GANSpace component {component} does not exist: the PCA has {pca.num_components} components")
