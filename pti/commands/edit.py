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
import json
import sys
from pathlib import Path

import numpy as np
import torch

from alignment import AlignmentError, FacePlacement, load_image, paste_back_faces
from editing_directions.chain import EditChain
from editing_directions.edit import KINDS, Edit
from editing_directions.errors import EditingError
from editing_directions.library import EditLibrary, demo_library
from pti.generator_io import GeneratorFileError
from pti.images import side_by_side
from pti.placements import FACES_FORMAT
from pti.weights import WeightsError, load_generator

STRIP_FILENAME = "strip.png"
CHAIN_FILENAME = "chain.json"
PASTED_FILENAME = "pasted.png"


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
                        help="pivot .npy: a W code (1, w_dim), used on every layer, or a W+ code (1, num_ws, w_dim); "
                             "or the pivots.npz of `invert --all-faces` (one pivot per face)")
    parser.add_argument("--face", type=positive_int, metavar="K",
                        help="with a pivots.npz: edit face K only (numbered left to right from 1, as in faces.png); "
                             "default: every face, each into face_K/")
    parser.add_argument("--paste-back", type=Path, metavar="FACES_JSON",
                        help="also write pasted.png: the photo with each edited face (the last step) pasted back; "
                             "FACES_JSON is the faces.json written by `invert`")
    parser.add_argument("--paste-into", type=Path, metavar="IMAGE",
                        help="with --paste-back: paste into this image (the same size as the photo, e.g. an earlier "
                             "pasted.png, to stack a chain per face) instead of the photo named in FACES_JSON")
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
    except (EditingError, EditCommandError, GeneratorFileError, WeightsError, AlignmentError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


def edit_pivot(args: argparse.Namespace) -> list[Path]:
    """Load the generator, pivot(s) and edits, render every step of each face, write the images, the chain and
    (--paste-back) the photo with the edited faces; returns the paths."""
    edits = [Edit.parse(text) for text in args.edits]
    if args.device.type == "cuda" and not torch.cuda.is_available():
        raise EditCommandError(f"--device {args.device}: CUDA is not available on this machine")
    if args.paste_into is not None and args.paste_back is None:
        raise EditCommandError("--paste-into is where --paste-back pastes: give --paste-back FACES_JSON too")
    G = load_generator(args.weights, device=args.device, cache_dir=args.cache_dir)
    pivots = load_pivots(args.pivot, num_ws=G.num_ws, w_dim=G.w_dim)
    numbers = _face_numbers(args.face, len(pivots), args.pivot)
    placements = load_placements(args.paste_back, len(pivots)) if args.paste_back is not None else None
    library = _library(args, G)
    chain = EditChain.from_json(args.chain.read_text(), library) if args.chain else EditChain(library)
    for edit in edits:
        chain.append(edit)

    names = ["start"] + [edit.slug for edit in chain.edits]
    written, finals = [], []
    for number in numbers:
        images = chain.render(G, pivots[number - 1], noise_mode=args.noise_mode, batch_size=args.batch_size)
        folder = args.out if len(pivots) == 1 else args.out / f"face_{number}"
        folder.mkdir(parents=True, exist_ok=True)
        for index, (name, image) in enumerate(zip(names, images)):
            written.append(folder / f"step_{index:02d}_{name}.png")
            image.save(written[-1])
        written.append(folder / STRIP_FILENAME)
        side_by_side(images).save(written[-1])
        finals.append(images[-1])
    written.append(args.out / CHAIN_FILENAME)
    written[-1].write_text(chain.to_json() + "\n")
    if placements is not None:
        photo_path, faces = placements
        photo = load_image(args.paste_into or photo_path)
        written.append(args.out / PASTED_FILENAME)
        paste_back_faces(photo, [faces[number - 1] for number in numbers], finals).save(written[-1])
    return written


def load_pivots(path: Path, *, num_ws: int, w_dim: int) -> list[torch.Tensor]:
    """The pivots of a .npy (one) or of the pivots.npz of `invert --all-faces` (one per face, in face order)."""
    if path.suffix != ".npz":
        return [load_pivot(path, num_ws=num_ws, w_dim=w_dim)]
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = [f"pivot_{i}" for i in range(len(archive.files))]
            if not names or sorted(names) != sorted(archive.files):
                raise PivotFileError(f"{path}: expected arrays pivot_0, pivot_1, ... (the pivots.npz of `invert "
                                     f"--all-faces`), found {archive.files}")
            arrays = [archive[name] for name in names]
    except FileNotFoundError:
        raise PivotFileError(f"pivot file not found: {path}") from None
    except (ValueError, OSError) as error:
        raise PivotFileError(f"{path}: not a .npz of arrays without pickled objects ({error})") from None
    return [_checked_pivot(array, f"{path} ({name})", num_ws=num_ws, w_dim=w_dim)
            for name, array in zip(names, arrays)]


def load_placements(path: Path, num_faces: int) -> tuple[Path, list[FacePlacement]]:
    """The photo and the place of each face written by `invert` in faces.json, checked against the pivots."""
    try:
        data = json.loads(path.read_text())
        if data.get("format") != FACES_FORMAT:
            raise ValueError(f"not a {FACES_FORMAT} file")
        size = tuple(int(v) for v in data["size"])
        faces = [FacePlacement(quad=np.array(face["quad"], dtype=np.float64),
                               landmarks=np.array(face["landmarks"], dtype=np.float64), original_size=size)
                 for face in data["faces"]]
        if any(face.quad.shape != (4, 2) or face.landmarks.shape != (68, 2) for face in faces):
            raise ValueError("a face without a (4, 2) quad and (68, 2) landmarks")
        photo = path.parent / data["photo"]  # as written when absolute; relative to faces.json's folder if not
    except FileNotFoundError:
        raise EditCommandError(f"--paste-back: {path} not found (the faces.json written by `invert`)") from None
    except (ValueError, KeyError, TypeError) as error:
        raise EditCommandError(f"--paste-back: {path} is not the faces.json written by `invert` ({error})") from None
    if len(faces) != num_faces:
        raise EditCommandError(f"--paste-back: {path} places {len(faces)} face(s) but the pivot file holds "
                               f"{num_faces}: use the faces.json of the same `invert` run")
    return photo, faces


def _face_numbers(face: int | None, num_faces: int, path: Path) -> list[int]:
    """The faces to edit (numbered from 1): `face` alone, or every face."""
    if face is None:
        return list(range(1, num_faces + 1))
    if face > num_faces:
        raise EditCommandError(f"--face {face}: {path} holds {num_faces} face(s), so K must be 1..{num_faces}")
    return [face]


def load_pivot(path: Path, *, num_ws: int, w_dim: int) -> torch.Tensor:
    """A pivot .npy as a float32 tensor: W (1, w_dim) or W+ (1, num_ws, w_dim), checked against the generator."""
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise PivotFileError(f"pivot file not found: {path}") from None
    except (ValueError, OSError) as error:
        raise PivotFileError(f"{path}: not a .npy array without pickled objects ({error})") from None
    return _checked_pivot(array, str(path), num_ws=num_ws, w_dim=w_dim)


def _checked_pivot(array: np.ndarray, name: str, *, num_ws: int, w_dim: int) -> torch.Tensor:
    """A pivot array as a float32 tensor, after checking its type, shape and values against the generator."""
    if not isinstance(array, np.ndarray) or array.dtype.kind != "f":
        raise PivotFileError(f"{name}: expected a floating-point array, found {getattr(array, 'dtype', type(array))}")
    if array.shape not in ((1, w_dim), (1, num_ws, w_dim)):
        raise PivotFileError(f"{name}: expected shape (1, {w_dim}) or (1, {num_ws}, {w_dim}) for this generator, "
                             f"found {array.shape}")
    if not np.isfinite(array).all():
        raise PivotFileError(f"{name}: the pivot contains NaN or infinite values")
    return torch.from_numpy(array.astype(np.float32))


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
