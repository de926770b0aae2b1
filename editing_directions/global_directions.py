"""StyleCLIP global directions: an edit from two sentences, as offsets of the StyleSpace code `s`.

As the StyleCLIP authors' code computes it (`global_torch/StyleCLIP.py`, `manipulate.py`): the two sentences'
CLIP text features give `dt = normalize(t_target - t_neutral)`; `r = fs3 @ dt` scores every style channel (`fs3`
holds one unit-norm CLIP image-space vector per channel of the conv layers, toRGB excluded); channels with
`|r| < beta` are left out, the rest scaled by `1 / max|r|`, split per layer and multiplied by that layer's standard
deviation of `s`. The edit is `s' = s + alpha * delta_s`.

The per-layer standard deviation is computed from the generator as the authors do: z drawn by
`numpy.random.RandomState(5).randn`, mapped with truncation 0.7 on the first 8 W+ layers, through each conv layer's
affine; numpy's `std` over the samples (ddof 0). It is computed once, in chunks, and kept in our cache folder next to
the converted generators, as safetensors.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch

from editing_directions.edit import DEFAULT_BETA, DEFAULT_NEUTRAL  # noqa: F401 - the defaults, named here too
from editing_directions.errors import DirectionFileError, TextEditError

DEFAULT_ALPHA = 4.1  # strength, as the authors' notebook
ALPHA_MIN, ALPHA_MAX, ALPHA_STEP = -10.0, 10.0, 0.1
BETA_MIN, BETA_MAX, BETA_STEP = 0.08, 0.3, 0.01
FS3_KEY = "styleclip-fs3-ffhq"  # registry key of the authors' FFHQ fs3
STD_SAMPLES = 100_000  # latents behind the per-layer std (the authors' StyleCLIP.py)
STD_SEED = 5  # numpy RandomState seed of those latents (the authors' GenerateS)
STD_TRUNCATION_PSI = 0.7  # truncation of those latents (the authors' Manipulator)
STD_TRUNCATION_CUTOFF = 8  # truncated W+ layers (the authors' Manipulator)
STD_CHUNK = 2_000  # latents per chunk when computing the std


class GlobalDirection(NamedTuple):
    """A text edit's per-layer StyleSpace offsets (before alpha) and how many channels it moves."""

    delta_s: list[np.ndarray]  # one float32 array per conv layer, in the generator's `style_layers()` order
    channels: int  # channels with |fs3 . dt| >= beta


def global_direction(
    fs3: np.ndarray,  # (sum of the layers' channels, D): one unit-norm CLIP image-space vector per style channel
    neutral: np.ndarray,  # (D,) CLIP text feature of the neutral sentence, L2-normalised
    target: np.ndarray,  # (D,) CLIP text feature of the target sentence, L2-normalised
    *,
    beta: float,  # channels whose |relevance| is below this are not moved
    layer_std: Sequence[np.ndarray],  # per-layer std of s; its lengths split the channels of fs3
) -> GlobalDirection:
    """The StyleSpace offsets that move an image from `neutral` towards `target` (multiply by alpha to apply)."""
    fs3 = np.asarray(fs3, dtype=np.float32)
    neutral, target = (np.asarray(t, dtype=np.float32).reshape(-1) for t in (neutral, target))
    sizes = [len(std) for std in layer_std]
    if fs3.ndim != 2 or fs3.shape[0] != sum(sizes) or {neutral.shape, target.shape} != {(fs3.shape[1],)}:
        raise TextEditError(f"fs3 {fs3.shape}, text features {neutral.shape} / {target.shape} and the layers' "
                            f"{sum(sizes)} channels do not fit together")
    difference = target - neutral
    norm = float(np.linalg.norm(difference))
    if norm < 1e-6:
        raise TextEditError("the neutral and target sentences give the same CLIP features, so there is no direction; "
                            "change the target sentence to say what should change")
    relevance = fs3 @ (difference / norm)
    kept = np.abs(relevance) >= beta
    channels = int(kept.sum())
    if channels == 0:
        raise TextEditError(f"beta {beta:g} keeps no channel: the most relevant channel scores "
                            f"{float(np.abs(relevance).max()):.3f}; lower beta below that")
    relevance = np.where(kept, relevance, 0.0)
    relevance = relevance / np.abs(relevance).max()
    bounds = np.cumsum(sizes)[:-1]
    delta_s = [(part * np.asarray(std, dtype=np.float32)).astype(np.float32)
               for part, std in zip(np.split(relevance, bounds), layer_std)]
    return GlobalDirection(delta_s, channels)


def load_fs3(path: str | Path, *, channels: int | None = None) -> np.ndarray:
    """The fs3 matrix (channels, D) as float32, read with `allow_pickle=False` and checked (finite, unit rows)."""
    path = Path(path)
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DirectionFileError(f"fs3 file not found: {path}") from None
    except (ValueError, OSError) as error:
        raise DirectionFileError(f"{path}: not a .npy array without pickled objects ({error})") from None
    if not isinstance(array, np.ndarray) or array.ndim != 2 or array.dtype.kind != "f":
        raise DirectionFileError(f"{path}: expected a 2-d floating-point array (channels, D), found "
                                 f"{getattr(array, 'shape', type(array))}")
    if channels is not None and array.shape[0] != channels:
        raise DirectionFileError(f"{path}: fs3 has {array.shape[0]} rows but the generator's conv layers have "
                                 f"{channels} style channels (fs3 is for the FFHQ 1024 generator)")
    array = array.astype(np.float32)
    norms = np.linalg.norm(array, axis=1)
    if not np.isfinite(array).all() or np.abs(norms - 1).max() > 1e-2:
        raise DirectionFileError(f"{path}: fs3 rows should be finite unit vectors (norms {norms.min():.3f} to "
                                 f"{norms.max():.3f})")
    return array


def style_std(
    G: torch.nn.Module,  # generator with `.mapping` and `.synthesis.styles`
    *,
    samples: int = STD_SAMPLES,
    seed: int = STD_SEED,
    truncation_psi: float = STD_TRUNCATION_PSI,
    truncation_cutoff: int | None = STD_TRUNCATION_CUTOFF,
    chunk: int = STD_CHUNK,
) -> list[np.ndarray]:
    """Per-layer std (ddof 0) of the StyleSpace code over `samples` latents, computed in chunks (float64 sums)."""
    parameter = next(G.parameters())
    random = np.random.RandomState(seed)  # successive draws continue one stream: chunks equal one big draw
    total = square = None
    with torch.no_grad():
        for start in range(0, samples, chunk):
            z = torch.from_numpy(random.randn(min(chunk, samples - start), G.z_dim)).to(parameter.device)
            ws = G.mapping(z, None, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
            styles = [s.double() for s in G.synthesis.styles(ws)]
            sums = [s.sum(dim=0) for s in styles]
            squares = [s.square().sum(dim=0) for s in styles]
            total = sums if total is None else [a + b for a, b in zip(total, sums)]
            square = squares if square is None else [a + b for a, b in zip(square, squares)]
    return [np.sqrt(np.maximum((q / samples - (t / samples) ** 2).cpu().numpy(), 0)).astype(np.float32)
            for t, q in zip(total, square)]


def cached_style_std(G: torch.nn.Module, *, cache_dir: str | Path | None = None, **options) -> list[np.ndarray]:
    """`style_std(G, **options)`, computed once per generator and settings and kept as safetensors in `cache_dir`
    (default: `$PTI_CACHE_DIR/converted`, next to the converted generators), named by a hash of the mapping and
    affine weights and the settings."""
    from safetensors.numpy import load_file, save_file

    from pti.weights import pti_cache_dir

    settings = {"samples": STD_SAMPLES, "seed": STD_SEED, "truncation_psi": STD_TRUNCATION_PSI,
                "truncation_cutoff": STD_TRUNCATION_CUTOFF, **options}
    folder = Path(cache_dir) if cache_dir is not None else pti_cache_dir() / "converted"
    path = folder / f"style-std-{_std_key(G, settings)}.safetensors"
    count = len(G.synthesis.style_layers())
    if path.is_file():
        try:
            stored = load_file(str(path))
            layers = [stored[f"layer_{index:02d}"] for index in range(count)]
            if [len(std) for std in layers] == list(G.synthesis.style_channels()):
                return layers
        except (OSError, KeyError, ValueError):
            pass  # a damaged cache file is computed again
    layers = style_std(G, **settings)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        save_file({f"layer_{index:02d}": std for index, std in enumerate(layers)}, str(temporary))
        os.replace(temporary, path)
    except OSError:  # a read-only cache only costs computing it again next time
        with contextlib.suppress(OSError):  # nothing to remove, or no folder at all (a file in the way)
            temporary.unlink()
    return layers


def _std_key(G: torch.nn.Module, settings: dict) -> str:
    """A hash of what the std depends on: the mapping's and the conv affines' tensors, and the sampling settings."""
    digest = hashlib.sha256(repr(sorted((k, v) for k, v in settings.items() if k != "chunk")).encode())
    tensors = dict(G.mapping.state_dict(prefix="mapping."))
    for name, layer in G.synthesis.style_layers():
        tensors.update(layer.affine.state_dict(prefix=f"{name}.affine."))
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]
