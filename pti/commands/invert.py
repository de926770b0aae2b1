"""`python -m pti invert PHOTO --out DIR`: PTI on one photo; writes the aligned face, pivot, tuned weights, renders."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

from pti.config import PRESET_NAMES, ConfigError, PTIConfig, preset
from pti.metrics import METRIC_NOTES, MSE_SCALE
from pti.progress import Cancelled, Progress

# The pipeline's pivot methods (kept here so that `--help` does not import the pipeline and its models).
PIVOT_METHODS = ("w", "e4e")
# Report key and title of the pivot rendered by the original generator, per pivot method.
PIVOT_REPORT_KEYS = {"w": "w_projection", "e4e": "e4e"}
PIVOT_TITLES = {"w": "W projection", "e4e": "e4e"}


def add_pti_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by `invert` and `eval`: model, device, preset and step counts, models for alignment/LPIPS."""
    parser.add_argument("--model", default="stylegan2-ffhq-1024",
                        help="generator: a registry name (e.g. stylegan2-ffhq-1024, or 'tiny' for the 32 px test "
                             "generator) or a generator file (default: %(default)s)")
    parser.add_argument("--device", default=None,
                        help="torch device, e.g. cpu or cuda (default: cuda if available, else cpu)")
    parser.add_argument("--preset", choices=PRESET_NAMES, default="paper",
                        help="step counts and schedule: paper (450 + 350 steps) or fast (fewer steps, for a CPU)")
    parser.add_argument("--projection-steps", type=int, default=None, help="override the projection step count")
    parser.add_argument("--tuning-steps", type=int, default=None, help="override the tuning step count")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed and device: same result)")
    parser.add_argument("--predictor", type=Path, default=None,
                        help="dlib 68-landmark model file for alignment (default: from the weights registry)")
    parser.add_argument("--e4e", type=Path, default=None,
                        help="e4e encoder checkpoint (the layout of e4e_ffhq_encode.pt) for e4e pivots (default: "
                             "e4e-ffhq-encode from the weights registry; read only when an e4e pivot is used)")
    parser.add_argument("--lpips-random", action="store_true",
                        help="TESTING ONLY: LPIPS with random backbone weights (no pretrained download needed)")


def config_from_args(args: argparse.Namespace, *, locality: bool = True) -> PTIConfig:
    """The PTI configuration the options ask for; progress is read only on the lines that get printed, and
    nothing renders previews (the command prints no images while it runs)."""
    base = preset(args.preset)
    projection_steps = args.projection_steps or base.projection.num_steps
    tuning_steps = args.tuning_steps or base.tuning.num_steps
    if args.projection_steps is not None and args.projection_steps < 1:
        raise ConfigError(f"--projection-steps must be >= 1, got {args.projection_steps}")
    if args.tuning_steps is not None and args.tuning_steps < 1:
        raise ConfigError(f"--tuning-steps must be >= 1, got {args.tuning_steps}")
    return preset(
        args.preset,
        projection={"num_steps": projection_steps, "report_every": max(1, projection_steps // 10),
                    "preview_every": 0},
        tuning={"num_steps": tuning_steps, "report_every": max(1, tuning_steps // 10), "preview_every": 0},
        locality={"enabled": locality},
    )


def device_from_args(args: argparse.Namespace) -> torch.device:
    """The chosen device, or CUDA when available, else the CPU."""
    if args.device:
        return torch.device(args.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def print_progress(progress: Progress) -> None:
    """Progress callback: one line on stderr for every step that carries losses, and for each phase's last step."""
    if progress.losses or progress.step == progress.total:
        losses = " ".join(f"{name}={value:.4f}" for name, value in progress.losses.items())
        print(f"[{progress.phase}] step {progress.step}/{progress.total} {losses} ({progress.elapsed_s:.1f} s)",
              file=sys.stderr, flush=True)


def build_pipeline(args: argparse.Namespace, config: PTIConfig, **kwargs):
    """The `PTIPipeline` for these options."""
    from pti.pipeline import PTIPipeline

    return PTIPipeline(args.model, device=device_from_args(args), config=config,
                       lpips_pretrained=not args.lpips_random, predictor_path=args.predictor, e4e=args.e4e, **kwargs)


def warn_if_slow(pipeline, args: argparse.Namespace) -> None:
    """A note on stderr when the paper's full schedule is about to run at a large resolution on the CPU."""
    if pipeline.device.type == "cpu" and pipeline.resolution >= 512 and args.preset == "paper":
        print("note: the paper preset at this resolution takes well over an hour on a CPU; "
              "--preset fast (or fewer --projection-steps/--tuning-steps) is quicker", file=sys.stderr)


def user_errors() -> tuple[type[Exception], ...]:
    """Exception types reported as one line (bad input incl. alignment and config errors, missing weights)."""
    from pti.weights import WeightsError

    return (ValueError, FileNotFoundError, WeightsError, Cancelled)


def run_invert(args: argparse.Namespace) -> int:
    """Run PTI on `args.photo` and write the results into `args.out`."""
    try:
        config = config_from_args(args, locality=not args.no_locality)
        pipeline = build_pipeline(args, config)
        warn_if_slow(pipeline, args)
        result = pipeline.invert(args.photo, face_index=args.face_index, callback=print_progress, seed=args.seed,
                                 pivot=args.pivot)
    except user_errors() as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    identity = result.identities[0]
    identity.aligned.image.save(out / "aligned.png")
    saved = result.tuned.save(out)
    identity.pivot_original.save(out / "pivot_original.png")
    identity.pivot_tuned.save(out / "pivot_tuned.png")
    report = {
        "photo": str(args.photo),
        "model": str(args.model),
        "device": str(pipeline.device),
        "seed": args.seed,
        "preset": args.preset,
        "config": dataclasses.asdict(config),
        "pivot": {"method": result.pivot_method, "steps": identity.pivot.steps_run, "seconds": result.projection_s},
        "tuning": {"steps": result.tuned.steps_run, "seconds": result.tuning_s},
        PIVOT_REPORT_KEYS[result.pivot_method]: dataclasses.asdict(identity.metrics_original),
        "pti": dataclasses.asdict(identity.metrics_tuned),
        "metrics": METRIC_NOTES,
        "files": {"weights": saved.weights.name, "pivot": saved.pivots.name},
    }
    (out / "metrics.json").write_text(json.dumps(report, indent=2))
    print(f"{PIVOT_TITLES[result.pivot_method]} ({result.projection_s:.1f} s): MSE {identity.metrics_original.mse:.4f} "
          f"LPIPS {identity.metrics_original.lpips:.4f}; PTI: MSE {identity.metrics_tuned.mse:.4f} "
          f"LPIPS {identity.metrics_tuned.lpips:.4f} (MSE: {MSE_SCALE}; LPIPS: AlexNet); written to {out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `invert` sub-command."""
    parser = subparsers.add_parser(
        "invert", help="PTI on one photo", description=__doc__,
        epilog="Writes aligned.png, pivot.npy, tuned.safetensors, pivot_original.png, pivot_tuned.png, metrics.json.")
    parser.add_argument("photo", type=Path, help="photo with a face")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--face-index", type=int, default=None,
                        help="which detected face to use (0 = most confident; default: the most confident)")
    parser.add_argument("--no-locality", action="store_true", help="tune without the locality regulariser")
    parser.add_argument("--pivot", choices=PIVOT_METHODS, default="w",
                        help="how to find the pivot: w (the paper's W projection, default) or e4e (the e4e encoder's "
                             "W+ code in one forward pass: much faster, the codes StyleCLIP mappers were trained on)")
    add_pti_arguments(parser)
    parser.set_defaults(func=run_invert)
