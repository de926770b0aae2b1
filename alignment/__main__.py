"""Command line: `python -m alignment PHOTO -o OUT.png [--face N] [--size S] [--predictor FILE]`."""
from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

from .align import DEFAULT_OUTPUT_SIZE, MIN_FACE_SCORE, align_face
from .detection import RECIPE_MAX_PIXELS
from .errors import AlignmentError


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the alignment command line."""
    parser = argparse.ArgumentParser(
        prog="python -m alignment", description="Align the face in a photo the way FFHQ was built."
    )
    parser.add_argument("photo", help="input photo (JPEG, PNG, WebP, BMP, TIFF or GIF)")
    parser.add_argument("-o", "--output", required=True, help="where to write the aligned face (e.g. out.png)")
    parser.add_argument(
        "--face", type=int, default=None, metavar="N", help="which face to align (default 0: the most confident)"
    )
    parser.add_argument(
        "--size", type=int, default=DEFAULT_OUTPUT_SIZE, metavar="S", help="side of the aligned image in pixels (1024)"
    )
    parser.add_argument(
        "--predictor", default=None, metavar="FILE",
        help="a local shape_predictor_68_face_landmarks.dat (default: from the weights registry)",
    )
    parser.add_argument(
        "--whole-photo", action="store_true",
        help=f"detect on the whole photo however large, exactly as the FFHQ recipe does (0.4-0.7 s per megapixel; "
             f"by default photos above {RECIPE_MAX_PIXELS / 2**20:g} megapixels are detected on a downscaled copy)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Align one face, write it, list every face found; returns the exit status (1 on bad input)."""
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    try:
        aligned = align_face(args.photo, face_index=args.face, output_size=args.size, predictor_path=args.predictor,
                             max_pixels=None if args.whole_photo else RECIPE_MAX_PIXELS)
    except AlignmentError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - started
    for index, face in enumerate(aligned.faces):
        chosen = "  <- aligned" if index == aligned.face_index else ""
        print(
            f"face {index}: score {face.score:.3f}, box ({face.left:.0f}, {face.top:.0f}, {face.right:.0f}, "
            f"{face.bottom:.0f}){chosen}"
        )
    for face in aligned.weak_faces:
        print(
            f"weak detection, not offered as a face: score {face.score:.3f} < {MIN_FACE_SCORE}, box ({face.left:.0f}, {face.top:.0f}, "
            f"{face.right:.0f}, {face.bottom:.0f})"
        )
    try:
        aligned.image.save(args.output)
    except (OSError, ValueError) as error:
        print(f"error: cannot write {args.output}: {error}", file=sys.stderr)
        return 1
    print(f"wrote {args.output} ({aligned.output_size}x{aligned.output_size}) in {elapsed:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
