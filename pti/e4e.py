"""e4e pivots: load the released `e4e_ffhq_encode.pt` safely and map aligned faces to W+ in one forward pass."""
from __future__ import annotations

import argparse
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from pti.e4e_network import (
    FIRST_FINE_STYLE,
    INPUT_RESOLUTION,
    STYLE_DIM,
    Encoder4Editing,
    num_styles_for_resolution,
)
from pti.images import pil_to_tensor

E4E_WEIGHTS_KEY = "e4e-ffhq-encode"
ENCODER_PREFIX = "encoder."
ENCODER_TYPE = "Encoder4Editing"
# Values of an input tensor may exceed [-1, 1] by this much (float rounding of a normalisation).
INPUT_RANGE_TOLERANCE = 1e-3
# How many offending keys an error message lists before it summarises.
KEYS_SHOWN_IN_ERRORS = 5


class E4ECheckpointError(ValueError):
    """A file that is not a usable e4e checkpoint (unreadable, wrong layout, wrong keys or shapes)."""


class E4EInputError(ValueError):
    """An image or tensor that the e4e encoder cannot take."""


class E4EGeneratorMismatchError(ValueError):
    """An e4e encoder whose W+ codes do not fit the generator (another number of layers or another w_dim)."""


@dataclass(frozen=True)
class E4ECheckpoint:
    """The parts of an e4e checkpoint we use: encoder weights (prefix stripped), `latent_avg`, training options."""

    encoder_state_dict: dict[str, torch.Tensor]  # released key names, e.g. "body.0.res_layer.1.weight"
    latent_avg: torch.Tensor  # (num_styles, style_dim) average W+ added to the encoder's codes (512 wide released)
    opts: dict  # training options; an argparse.Namespace in older files is converted to a dict


def _summarise(keys: list[str]) -> str:
    """First few keys of a list, and how many more there are."""
    shown = ", ".join(keys[:KEYS_SHOWN_IN_ERRORS])
    more = len(keys) - KEYS_SHOWN_IN_ERRORS
    return shown + (f" and {more} more" if more > 0 else "")


def _styles_for_size(stylegan_size: object) -> int | None:
    """W+ layers of a generator of `stylegan_size` px, or None when that is not a valid resolution."""
    try:
        return num_styles_for_resolution(int(stylegan_size))
    except (TypeError, ValueError, OverflowError):
        return None


def read_e4e_checkpoint(path: str | Path) -> E4ECheckpoint:
    """Read an e4e checkpoint with `torch.load(weights_only=True)`; `decoder.*` is dropped, nothing is executed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"e4e checkpoint not found: {path}")
    try:
        # Older checkpoints store `opts` as an argparse.Namespace: allow that one plain-data class, nothing else.
        # Zip-format files are memory-mapped: the decoder.* half is never read, and the encoder is not copied.
        with torch.serialization.safe_globals([argparse.Namespace]):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as error:  # a corrupt or foreign file can fail in many ways inside the unpickler
        raise E4ECheckpointError(f"{path} is not a readable torch checkpoint (weights_only=True): {error}") from error
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        found = sorted(map(str, checkpoint)) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise E4ECheckpointError(f"{path} is not an e4e checkpoint: expected a dict with 'state_dict', got {found}")
    encoder_state_dict = {
        key[len(ENCODER_PREFIX):]: value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith(ENCODER_PREFIX)
    }
    if not encoder_state_dict:
        raise E4ECheckpointError(f"{path} is not an e4e checkpoint: its state_dict has no '{ENCODER_PREFIX}*' keys")
    latent_avg = checkpoint.get("latent_avg")
    if (
        not isinstance(latent_avg, torch.Tensor)
        or latent_avg.ndim != 2
        or latent_avg.shape[0] <= FIRST_FINE_STYLE
        or latent_avg.shape[1] < 1
    ):
        found = tuple(latent_avg.shape) if isinstance(latent_avg, torch.Tensor) else type(latent_avg).__name__
        raise E4ECheckpointError(
            f"{path}: expected 'latent_avg' of shape (num_styles > {FIRST_FINE_STYLE}, style_dim; {STYLE_DIM} "
            f"released), got {found}"
        )
    opts = checkpoint.get("opts", {})
    opts = vars(opts) if isinstance(opts, argparse.Namespace) else opts
    if not isinstance(opts, dict):
        raise E4ECheckpointError(f"{path}: expected 'opts' to be a dict, got {type(opts).__name__}")
    encoder_type = opts.get("encoder_type", ENCODER_TYPE)
    if encoder_type != ENCODER_TYPE:
        raise E4ECheckpointError(f"{path}: encoder_type is {encoder_type!r}; only {ENCODER_TYPE!r} (e4e) is supported")
    if "stylegan_size" in opts and _styles_for_size(opts["stylegan_size"]) != latent_avg.shape[0]:
        raise E4ECheckpointError(
            f"{path}: opts stylegan_size {opts['stylegan_size']!r} does not match 'latent_avg' "
            f"with {latent_avg.shape[0]} styles"
        )
    return E4ECheckpoint(encoder_state_dict=encoder_state_dict, latent_avg=latent_avg.float(), opts=opts)


def build_encoder(state_dict: dict[str, torch.Tensor], num_styles: int = 18,
                  style_dim: int = STYLE_DIM) -> Encoder4Editing:
    """An eval-mode, frozen Encoder4Editing holding `state_dict` (released key names; every key and shape checked)."""
    with torch.device("meta"):  # no memory and no random init for weights that are replaced right away
        encoder = Encoder4Editing(num_styles, style_dim)
    expected = encoder.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    wrong = [
        f"{key} {tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__}"
        f" (expected {tuple(expected[key].shape)})"
        for key, value in state_dict.items()
        if key in expected and not (isinstance(value, torch.Tensor) and value.shape == expected[key].shape)
    ]
    problems = [
        f"{label}: {_summarise(keys)}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
        if keys
    ]
    if problems:
        summary = "; ".join(problems)
        raise E4ECheckpointError(
            f"encoder weights do not match the e4e encoder ({num_styles} styles of {style_dim}); {summary}")
    # Contiguous tensors (zero-stride views are materialised) in the module's dtypes (int64 for num_batches_tracked).
    weights = {key: state_dict[key].to(dtype=value.dtype).contiguous() for key, value in expected.items()}
    encoder.load_state_dict(weights, strict=True, assign=True)
    return encoder.eval().requires_grad_(False)


def e4e_input_tensor(image: Image.Image) -> torch.Tensor:
    """The release's transform (Resize((256, 256)) bilinear, ToTensor, Normalize(0.5, 0.5)) -> (1, 3, 256, 256)."""
    if not isinstance(image, Image.Image):
        raise E4EInputError(f"expected a PIL image of an aligned face, got {type(image).__name__}")
    image = image.convert("RGB")
    if image.size != (INPUT_RESOLUTION, INPUT_RESOLUTION):
        image = image.resize((INPUT_RESOLUTION, INPUT_RESOLUTION), Image.BILINEAR)
    return pil_to_tensor(image)


@dataclass(eq=False)
class E4E:
    """The e4e encoder with its checkpoint's `latent_avg`: aligned face -> W+ pivot in one forward pass."""

    encoder: Encoder4Editing  # released key names; encoder(x) gives the codes before latent_avg
    latent_avg: torch.Tensor  # (num_styles, style_dim)

    @property
    def num_styles(self) -> int:
        """Number of W+ layers produced (18 for a 1024 px generator)."""
        return self.encoder.num_styles

    @property
    def style_dim(self) -> int:
        """Width of each W+ code (512 for the released encoder: the FFHQ generator's w_dim)."""
        return self.encoder.style_dim

    def check_fits(self, num_ws: int, w_dim: int) -> None:
        """Raise `E4EGeneratorMismatchError` unless the codes are (num_ws, w_dim), the generator's W+ shape."""
        if (self.num_styles, self.style_dim) != (num_ws, w_dim):
            raise E4EGeneratorMismatchError(
                f"the e4e encoder gives W+ codes of shape ({self.num_styles}, {self.style_dim}) but the generator "
                f"takes ({num_ws}, {w_dim}): the released e4e-ffhq-encode fits only the FFHQ 1024 px generator "
                "(18 x 512); use the W projection pivot ('w') with this generator"
            )

    @property
    def device(self) -> torch.device:
        """Device of the encoder's weights."""
        return self.latent_avg.device

    def to(self, device: str | torch.device, dtype: torch.dtype = torch.float32) -> E4E:
        """Move the encoder (in place) and latent_avg to `device` / `dtype`; returns self."""
        self.encoder.to(device=device, dtype=dtype)
        self.latent_avg = self.latent_avg.to(device=device, dtype=dtype)
        return self

    def invert_tensor(self, images: torch.Tensor) -> torch.Tensor:
        """Images (N, 3, 256, 256) in [-1, 1] -> W+ pivots (N, num_styles, style_dim), float32, on its device."""
        expected_shape = (3, INPUT_RESOLUTION, INPUT_RESOLUTION)
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1:] != expected_shape:
            found = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise E4EInputError(
                f"expected images of shape (N, 3, {INPUT_RESOLUTION}, {INPUT_RESOLUTION}), got {found} "
                "(use invert() for a PIL image of any size)"
            )
        if not images.is_floating_point():
            raise E4EInputError(f"expected floating-point images in [-1, 1], got dtype {images.dtype}")
        low, high = images.min().item(), images.max().item()
        if not (-1 - INPUT_RANGE_TOLERANCE <= low and high <= 1 + INPUT_RANGE_TOLERANCE):
            raise E4EInputError(f"expected image values in [-1, 1], got range [{low:.3g}, {high:.3g}]")
        with torch.no_grad():
            codes = self.encoder(images.to(device=self.device, dtype=self.latent_avg.dtype))
            return (codes + self.latent_avg).float()

    def invert(self, image: Image.Image) -> torch.Tensor:
        """Aligned face (PIL, any size; resized to 256 as the release does) -> W+ pivot (1, num_styles, style_dim)."""
        return self.invert_tensor(e4e_input_tensor(image))


def load_e4e(
    path: str | Path | None = None,
    *,
    device: str | torch.device = "cpu",  # where the encoder runs
    dtype: torch.dtype = torch.float32,  # weights' dtype (pivots are returned in float32 either way)
) -> E4E:
    """Load the released e4e encoder (`path=None`: the registry's "e4e-ffhq-encode" file) for W+ pivots."""
    if path is None:
        from pti.weights import resolve

        path = resolve(E4E_WEIGHTS_KEY)
    checkpoint = read_e4e_checkpoint(path)
    try:
        num_styles, style_dim = checkpoint.latent_avg.shape
        encoder = build_encoder(checkpoint.encoder_state_dict, num_styles=num_styles, style_dim=style_dim)
    except E4ECheckpointError as error:
        raise E4ECheckpointError(f"{path}: {error}") from None
    return E4E(encoder=encoder, latent_avg=checkpoint.latent_avg).to(device, dtype)
