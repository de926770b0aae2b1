"""`python -m pti edit`: apply a chain of latent edits to a pivot and write an image per step and a strip.

Example: `python -m pti edit --pivot pivot.npy --weights tuned.safetensors --edit smile=2
--edit styleclip:afro=0.1 --edit age=-1 --out edits/` writes `step_00_start.png`, `step_01_smile+2.png`,
`step_02_styleclip-afro+0.1.png`, `step_03_age-1.png`, `strip.png` (every step side by side) and `chain.json`.

Text edits (StyleCLIP global directions) are typed as `text:[NEUTRAL->]TARGET=ALPHA[,BETA]`, e.g.
`--edit "text:a face->a smiling face=4.1,0.15"` or `--edit "text:grey hair=3"` (neutral 'a face', beta 0.15 by
default; alpha -10..10, beta 0.08..0.3). They need fs3 and CLIP ViT-B/32 from the Hub (6 MB and 605 MB, fetched on
first use) and the generator's per-layer std of s (computed once from --weights, then cached).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from editing_directions.chain import EditChain
from editing_directions.edit import KINDS, Edit
from editing_directions.errors import EditingError
from editing_directions.library import EditLibrary, demo_library
from pti.generator_io import GeneratorFileError
from pti.weights import WeightsError, load_generator

STRIP_FILENAME = "strip.png"
CHAIN_FILENAME = "chain.json"


class EditCommandError(ValueError):
    """Input the edit command cannot use: conflicting options or a bad pivot file."""


class PivotFileError(EditCommandError):
    """A pivot file is missing, unreadable, or not a W (1, w_dim) / W+ (1, num_ws, w_dim) code of the generator."""


def torch_device(text: str) -> torch.device:
    """argparse type: a torch device name such as `cpu`, `cuda` or `cuda:1`."""
    try:
        return torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"not a torch device: {text!r}") from None


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `edit` sub-command."""
    parser = subparsers.add_parser(
        "edit", help="apply a chain of latent edits to a pivot and render every step",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pivot", type=Path, required=True,
                        help="pivot .npy: a W code (1, w_dim), used on every layer, or a W+ code (1, num_ws, w_dim)")
    parser.add_argument("--weights", required=True,
                        help="generator: our .safetensors (e.g. tuned.safetensors), a StyleGAN2-ADA .pkl, or a name "
                             "known to pti.weights.load_generator ('tiny', 'ffhq-1024', ...)")
    parser.add_argument("--edit", dest="edits", action="append", default=[], metavar="[KIND:]NAME=STRENGTH",
                        help=f"an edit, applied in the order given; KIND is one of {', '.join(KINDS)} "
                             "(a bare NAME is interfacegan), e.g. smile=2, ganspace:smile=-6, styleclip:afro=0.1; "
                             "a text edit is text:[NEUTRAL->]TARGET=ALPHA[,BETA], e.g. "
                             "'text:a face->a smiling face=4.1,0.15' (see above)")
    parser.add_argument("--chain", type=Path, help="replay the edits of a chain JSON (the --edit edits follow them)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created if needed)")
    parser.add_argument("--device", type=torch_device, default="cpu",
                        help="torch device for rendering, e.g. cpu or cuda (default cpu)")
    parser.add_argument("--directions-dir", type=Path,
                        help="folder with age.pt, smile.pt, rotation.pt and ffhq_pca.pt, used instead of the Hub")
    parser.add_argument("--mapper-dir", type=Path, help="folder whose *.pt files are extra StyleCLIP mappers")
    parser.add_argument("--mapper-repo", help="Hub repo whose *.pt files are extra StyleCLIP mappers")
    parser.add_argument("--mapper-repo-type", default="model", choices=("model", "space", "dataset"),
                        help="type of --mapper-repo (default model)")
    parser.add_argument("--mapper-subfolder", help="only the mappers under this folder of --mapper-repo")
    parser.add_argument("--demo-edits", action="store_true",
                        help="seeded RANDOM edits sized to the generator (for the tiny test model; no meaning)")
    parser.add_argument("--cache-dir", type=Path, help="Hugging Face cache folder (default: huggingface_hub's)")
    parser.add_argument("--noise-mode", default="const", choices=("const", "random", "none"),
                        help="synthesis noise (default const)")
    parser.add_argument("--batch-size", type=positive_int,
                        help="codes per generator call (default: every step in one call)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run `edit`; returns 0, or 2 with a one-line message on stderr for bad input or missing files."""
    try:
        written = edit_pivot(args)
    except (EditingError, EditCommandError, GeneratorFileError, WeightsError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


def edit_pivot(args: argparse.Namespace) -> list[Path]:
    """Load the generator, pivot and edits, render every step, write the images and the chain; returns the paths."""
    edits = [Edit.parse(text) for text in args.edits]
    if args.device.type == "cuda" and not torch.cuda.is_available():
        raise EditCommandError(f"--device {args.device}: CUDA is not available on this machine")
    G = load_generator(args.weights, device=args.device, cache_dir=args.cache_dir)
    pivot = load_pivot(args.pivot, num_ws=G.num_ws, w_dim=G.w_dim)
    library = _library(args, G)
    chain = EditChain.from_json(args.chain.read_text(), library) if args.chain else EditChain(library)
    for edit in edits:
        chain.append(edit)

    images = chain.render(G, pivot, noise_mode=args.noise_mode, batch_size=args.batch_size)
    args.out.mkdir(parents=True, exist_ok=True)
    names = ["start"] + [edit.slug for edit in chain.edits]
    written = []
    for index, (name, image) in enumerate(zip(names, images)):
        written.append(args.out / f"step_{index:02d}_{name}.png")
        image.save(written[-1])
    written.append(args.out / STRIP_FILENAME)
    strip(images).save(written[-1])
    written.append(args.out / CHAIN_FILENAME)
    written[-1].write_text(chain.to_json() + "\n")
    return written


def load_pivot(path: Path, *, num_ws: int, w_dim: int) -> torch.Tensor:
    """A pivot .npy as a float32 tensor: W (1, w_dim) or W+ (1, num_ws, w_dim), checked against the generator."""
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise PivotFileError(f"pivot file not found: {path}") from None
    except (ValueError, OSError) as error:
        raise PivotFileError(f"{path}: not a .npy array without pickled objects ({error})") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind != "f":
        raise PivotFileError(f"{path}: expected a floating-point array, found {getattr(array, 'dtype', type(array))}")
    if array.shape not in ((1, w_dim), (1, num_ws, w_dim)):
        raise PivotFileError(f"{path}: expected shape (1, {w_dim}) or (1, {num_ws}, {w_dim}) for this generator, "
                             f"found {array.shape}")
    if not np.isfinite(array).all():
        raise PivotFileError(f"{path}: the pivot contains NaN or infinite values")
    return torch.from_numpy(array.astype(np.float32))


def strip(images: list[Image.Image]) -> Image.Image:
    """Every image side by side, left to right."""
    width, height = images[0].size
    canvas = Image.new("RGB", (width * len(images), height))
    for index, image in enumerate(images):
        canvas.paste(image, (index * width, 0))
    return canvas


def _library(args: argparse.Namespace, G: torch.nn.Module) -> EditLibrary:
    """The demo library for --demo-edits, else the real edits (registry or --directions-dir, plus mapper folders)."""
    if args.demo_edits:
        extra = [flag for flag, value in (("--directions-dir", args.directions_dir), ("--mapper-dir", args.mapper_dir),
                                          ("--mapper-repo", args.mapper_repo)) if value is not None]
        if extra:
            raise EditCommandError(f"--demo-edits uses random edits only; drop {', '.join(extra)}")
        return demo_library(G.w_dim, G.num_ws, generator=G)
    return EditLibrary.from_registry(
        directions_dir=args.directions_dir, mapper_dir=args.mapper_dir, mapper_repo=args.mapper_repo,
        mapper_repo_type=args.mapper_repo_type, mapper_subfolder=args.mapper_subfolder, cache_dir=args.cache_dir,
        device=args.device, generator=G)
