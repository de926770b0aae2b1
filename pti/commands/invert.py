"""`python -m pti invert PHOTO --out DIR`: PTI on one photo; writes the aligned face, pivot, tuned weights, renders."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

from alignment import DEFAULT_MAX_FACES, draw_faces, load_image, paste_back_faces
from pti.config import PRESET_NAMES, ConfigError, PTIConfig, preset
from pti.metrics import METRIC_NOTES, MSE_SCALE
from pti.placements import FACES_FILENAME, write_placements
from pti.progress import Cancelled, Progress

# The pipeline's pivot methods (kept here so that `--help` does not import the pipeline and its models).
PIVOT_METHODS = ("w", "e4e")
# Report key and title of the pivot rendered by the original generator, per pivot method.
PIVOT_REPORT_KEYS = {"w": "w_projection", "e4e": "e4e"}
PIVOT_TITLES = {"w": "W projection", "e4e": "e4e"}
# With --all-faces: the photo with each face's box and number; with --paste-back: the reconstructions pasted back.
FACES_PREVIEW_FILENAME = "faces.png"
PASTED_FILENAME = "pasted.png"


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
        face = "" if progress.identity is None else f" face {progress.identity + 1}"
        print(f"[{progress.phase}{face}] step {progress.step}/{progress.total} {losses} ({progress.elapsed_s:.1f} s)",
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
    """Run PTI on `args.photo` (one face, or every face with --all-faces) and write the results into `args.out`."""
    group = None
    try:
        if args.all_faces and args.face_index is not None:
            raise ConfigError("--face-index picks one face and --all-faces inverts every face: give one of them")
        config = config_from_args(args, locality=not args.no_locality)
        pipeline = build_pipeline(args, config)
        warn_if_slow(pipeline, args)
        if args.all_faces:
            inversion = pipeline.invert_group(args.photo, callback=print_progress, seed=args.seed, pivot=args.pivot,
                                              max_faces=args.max_faces)
            group, result = inversion.group, inversion.result
        else:
            result = pipeline.invert(args.photo, face_index=args.face_index, callback=print_progress,
                                     seed=args.seed, pivot=args.pivot)
    except user_errors() as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    saved = result.tuned.save(out)
    report = {
        "photo": str(args.photo),
        "model": str(args.model),
        "device": str(pipeline.device),
        "seed": args.seed,
        "preset": args.preset,
        "config": dataclasses.asdict(config),
        "tuning": {"steps": result.tuned.steps_run, "seconds": result.tuning_s},
        "metrics": METRIC_NOTES,
        "files": {"weights": saved.weights.name, "pivot": saved.pivots.name},
    }
    if group is None:
        report.update(write_identity(result, result.identities[0], out))
    else:
        report["pivots_seconds"] = result.projection_s
        report["faces"] = [{"number": number, "folder": f"face_{number}", "box": _box(identity.aligned.box),
                            "quad": identity.aligned.quad.tolist(),
                            **write_identity(result, identity, out / f"face_{number}")}
                           for number, identity in enumerate(result.identities, start=1)]
        report["skipped"] = [{"box": _box(skipped.box), "score": skipped.box.score, "reason": skipped.reason}
                             for skipped in group.skipped]
    photo = load_image(args.photo) if group is not None or args.paste_back else None  # decoded once
    if group is not None:
        draw_faces(photo, group).save(out / FACES_PREVIEW_FILENAME)
    write_placements(out / FACES_FILENAME, Path(args.photo).resolve(), [identity.aligned for identity in result.identities])
    if args.paste_back:
        paste_back_faces(photo, [identity.aligned for identity in result.identities],
                         [identity.pivot_tuned for identity in result.identities]).save(out / PASTED_FILENAME)
    (out / "metrics.json").write_text(json.dumps(report, indent=2))
    for number, identity in enumerate(result.identities, start=1):
        face = f"face {number}: " if group is not None else ""
        print(f"{face}{PIVOT_TITLES[result.pivot_method]} ({result.projection_s:.1f} s): "
              f"MSE {identity.metrics_original.mse:.4f} LPIPS {identity.metrics_original.lpips:.4f}; "
              f"PTI: MSE {identity.metrics_tuned.mse:.4f} LPIPS {identity.metrics_tuned.lpips:.4f} "
              f"(MSE: {MSE_SCALE}; LPIPS: AlexNet)")
    for skipped in group.skipped if group is not None else ():
        print(f"skipped the face at ({skipped.box.left:.0f}, {skipped.box.top:.0f}): {skipped.reason}")
    print(f"written to {out}")
    return 0


def write_identity(result, identity, folder: Path) -> dict:
    """Write one face's aligned image and renders into `folder`; its part of the report."""
    folder.mkdir(parents=True, exist_ok=True)
    identity.aligned.image.save(folder / "aligned.png")
    identity.pivot_original.save(folder / "pivot_original.png")
    identity.pivot_tuned.save(folder / "pivot_tuned.png")
    return {
        "pivot": {"method": result.pivot_method, "steps": identity.pivot.steps_run, "seconds": result.projection_s},
        PIVOT_REPORT_KEYS[result.pivot_method]: dataclasses.asdict(identity.metrics_original),
        "pti": dataclasses.asdict(identity.metrics_tuned),
    }


def _box(box) -> list[float]:
    """A face box as [left, top, right, bottom] in photo pixels."""
    return [box.left, box.top, box.right, box.bottom]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `invert` sub-command."""
    parser = subparsers.add_parser(
        "invert", help="PTI on one photo", description=__doc__,
        epilog="Writes aligned.png, pivot.npy, tuned.safetensors, pivot_original.png, pivot_tuned.png, metrics.json, "
               "faces.json (where the face sits in the photo, for `edit --paste-back`); "
               "with --all-faces: faces.png (the numbered faces), face_K/ (aligned.png and the renders of face K), "
               "pivots.npz (one pivot per face), tuned.safetensors, metrics.json (per face, and the skipped faces "
               "with their reasons); with --paste-back also pasted.png.")
    parser.add_argument("photo", type=Path, help="photo with a face")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--face-index", type=int, default=None,
                        help="which detected face to use (0 = most confident; default: the most confident)")
    parser.add_argument("--all-faces", action="store_true",
                        help="invert every face of the photo together (one generator tuned for all, a pivot per "
                             "face); writes face_K/ per face, numbered left to right as in faces.png")
    parser.add_argument("--max-faces", type=int, default=DEFAULT_MAX_FACES,
                        help="with --all-faces: at most this many faces, the largest (default %(default)s)")
    parser.add_argument("--paste-back", action="store_true",
                        help="also write pasted.png: the photo with the PTI reconstruction of each face pasted back")
    parser.add_argument("--no-locality", action="store_true", help="tune without the locality regulariser")
    parser.add_argument("--pivot", choices=PIVOT_METHODS, default="w",
                        help="how to find the pivot: w (the paper's W projection, default) or e4e (the e4e encoder's "
                             "W+ code in one forward pass: much faster, the codes StyleCLIP mappers were trained on)")
    add_pti_arguments(parser)
    parser.set_defaults(func=run_invert)
