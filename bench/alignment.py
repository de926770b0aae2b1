"""Alignment against the FFHQ recipe written out (dlib detector with one up-sampling step on the whole photo, the
68-point predictor in its box, the recipe's quad), on the two test photos scaled to several sizes.

For each photo and size: wall seconds of `align_face` (median of `--repeats`) and of the recipe on the whole photo,
and how far `align_face` is from the recipe: the largest landmark distance, the largest quad-corner distance (both
in photo pixels) and the PSNR of the aligned images (256 px). Up to RECIPE_MAX_PIXELS the two are the same by
construction; above it `align_face` runs the recipe on a downscaled copy, and these numbers say what that costs.
Writes bench/results/alignment.json.

    python bench/alignment.py [--megapixels 1 3 6 12 24] [--repeats 3] [--predictor FILE]
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

_BENCH_DIR = Path(__file__).resolve().parent
if __name__ == "__main__":  # `python bench/alignment.py` puts bench/ first on sys.path, where pti.py shadows `pti`
    sys.path[:] = [str(_BENCH_DIR.parent)] + [p for p in sys.path if Path(p or os.curdir).resolve() != _BENCH_DIR]

import argparse  # noqa: E402 - after the sys.path fix above
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import dlib  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from alignment import align_face, ffhq_quad, landmark_predictor, render_aligned  # noqa: E402

PHOTOS = _BENCH_DIR.parent / "examples"
ALIGNED_SIZE = 256


def recipe_landmarks(photo: Image.Image, predictor: dlib.shape_predictor) -> np.ndarray:
    """The recipe's 68 landmarks of the most confident face: detector with one up-sampling step on the whole photo."""
    pixels = np.asarray(photo)
    rectangles, scores, _ = dlib.get_frontal_face_detector().run(pixels, 1, 0.0)
    best = rectangles[int(np.argmax(scores))]
    return np.array([(p.x, p.y) for p in predictor(pixels, best).parts()], dtype=float)


def psnr(a: Image.Image, b: Image.Image) -> float:
    """Peak signal-to-noise ratio of two 8-bit images in dB."""
    mse = np.mean((np.asarray(a, float) - np.asarray(b, float)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def measure(photo: Image.Image, predictor_path: str | None, repeats: int) -> dict:
    """One row: times of both and the distance of `align_face` from the recipe."""
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        face = align_face(photo, output_size=ALIGNED_SIZE, predictor_path=predictor_path)
        seconds.append(time.perf_counter() - started)
    started = time.perf_counter()
    landmarks = recipe_landmarks(photo, landmark_predictor(predictor_path))
    recipe_seconds = time.perf_counter() - started
    quad = ffhq_quad(landmarks)
    return {
        "size": list(photo.size),
        "megapixels": round(photo.width * photo.height / 1e6, 2),
        "align_face_s": round(statistics.median(seconds), 3),
        "recipe_s": round(recipe_seconds, 3),
        "landmarks_max_px": round(float(np.hypot(*(face.landmarks - landmarks).T).max()), 2),
        "quad_max_px": round(float(np.hypot(*(face.quad - quad).T).max()), 2),
        "aligned_psnr_db": round(psnr(face.image, render_aligned(photo, quad, ALIGNED_SIZE)), 1),
    }


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print one line per row, write the JSON; returns what it wrote."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", type=float, nargs="+", default=[1, 3, 6, 12, 24])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--predictor", default=None, help="a local shape_predictor_68_face_landmarks.dat")
    parser.add_argument("--out", type=Path, default=_BENCH_DIR / "results" / "alignment.json")
    args = parser.parse_args(argv)
    landmark_predictor(args.predictor)  # loaded and hashed once, outside the timings
    rows = {}
    for name in ("astronaut.png", "grace_hopper.jpg"):
        with Image.open(PHOTOS / name) as image:
            original = image.convert("RGB")
        for megapixels in args.megapixels:
            factor = (megapixels * 1e6 / (original.width * original.height)) ** 0.5
            photo = original.resize((round(original.width * factor), round(original.height * factor)),
                                    Image.Resampling.BICUBIC)
            row = measure(photo, args.predictor, args.repeats)
            rows.setdefault(name, []).append(row)
            print(name, json.dumps(row), flush=True)
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "dlib": dlib.__version__, "photos": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
